/* hopper_attn.cu - INT8 QK^T / FP8 P.V attention for sm_90a: wgmma fed by the TMA engine,
 * one producer warp and two or three consumer warpgroups per CTA.
 *
 * CTA = 64 * NC query rows of one (b, hq): warpgroup 0 is the producer (one thread issues bulk
 * copies of the pre-pass's K and V tiles into an NS-deep ring, completing on mbarriers); the NC
 * consumer warpgroups after it (Roles: 3 at D = 64, 2 or 3 at D = 128) each own 64 rows. A consumer
 * quantizes its Q rows to INT8 in shared memory (one scale per row), then per 128-key tile:
 *     S = Q K^T           wgmma s8, both operands from shared memory
 *     P = exp2(S c - m')  online softmax in fp32, P scaled into e4m3's range (x448)
 *     Ot = P V            wgmma e4m3, P from registers (its accumulator layout is the A
 *                         fragment layout thanks to the pre-pass's key permutation of V^T)
 *     O = O alpha + Ot    fp32 running sum: FP8 wgmma accumulates with a short mantissa, so
 *                         each tile's product starts from zero and is added here
 * At D = 128 with two consumers (not causal) the next tile's QK^T is issued ahead of this tile's
 * P.V, and the next tile's softmax runs while that P.V does. Otherwise each consumer runs its
 * tiles one after the other, and the consumers take turns issuing their GEMMs.
 * Numerics: csrc/sa3_reference.c, mode int8-fp8, q_block 1, k_block 128, granularity "quad" (each
 * thread's scores of a tile share one of the tile's 4 K scales). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <float.h>

#include <type_traits>


#include "hopper_launch.cuh"
#include "hopper_sm90.cuh"
#include "hopper_workspace.cuh"

namespace sa3h {
namespace {

/* NC consumer warpgroups per CTA, 64 query rows each. Three fit in 160 registers each (the
 * producer keeps 24), and a third warp per scheduler hides more of the softmax's latency; two get
 * 240, which the D = 128 loop needs to run a tile's P.V under the next tile's softmax. D = 64
 * always takes three; D = 128 takes three where the waves come out better (consumers_d128). */
template <int NC>
struct Roles {
    static constexpr int kThreads = 128 * (NC + 1);  /* + the producer warpgroup */
    static constexpr int kBlockM = 64 * NC;          /* query rows per CTA */
    static constexpr int kConsumerRegs = NC == 3 ? 160 : 240;
};
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kLog2P = 8.807354922057604f; /* log2(448): P is stored as p * 448 */

template <int DP, int NS, int NC>
struct Smem {
    static constexpr int kQ = 64 * DP;          /* one consumer's INT8 Q rows */
    static constexpr int kK = kBlockN * DP;     /* INT8 K tile */
    static constexpr int kV = DP * kBlockN;     /* e4m3 V^T tile */
    static constexpr int q_off = 0;
    static constexpr int k_off = NC * kQ;
    static constexpr int v_off = k_off + NS * kK;
    static constexpr int bar_off = v_off + NS * kV;  /* fullK, fullV, emptyK, emptyV: NS each */
    static constexpr int row_off = bar_off + 4 * NS * 8; /* per-row Q scale and LSE term */
    static constexpr int vs_off = row_off + 2 * NC * 64 * 4; /* each consumer's V scales, then V fixes */
    static constexpr int o_pitch = DP * 2 + 16;           /* padded: the fragment stores hit 32 banks */
    static constexpr int o_off = vs_off + NC * 2 * DP * 4; /* each consumer's 64 output rows */
    static constexpr int bytes = o_off + NC * 64 * o_pitch;
    static constexpr int alloc = bytes + 1024; /* the base is aligned to 1024 by hand */
};

/* Q rows [q0, q0+64) of (b, hq) -> INT8 rows in shared memory, one scale per row; 2 threads a
 * row. Also writes per row scale_q * sm_scale * log2(e) and sm_scale * q.mean(K) (the LSE term
 * that K smoothing removed), and stages the head's V scales and V fixes in `vs` (DP each) for the
 * epilogue. Rows past Sq become zeros. */
template <int DP, typename T>
__device__ __forceinline__ void load_quantize_q(const sa3_problem &p, const float *kmean, const float *vscale,
                                                const float *vfix, float *vs, int8_t *sq,
                                                float *row_scale, float *row_lse, int64_t b, int64_t hq,
                                                int64_t q0, int tid) {
    constexpr int PER = DP / 2;
    const int r = tid >> 1, half = tid & 1;
    const int64_t row = q0 + r;
    const T *src = static_cast<const T *>(p.q) + b * p.q_stride[0] + hq * p.q_stride[1] + row * p.q_stride[2];
    float x[PER], km[PER];
#pragma unroll
    for (int i = 0; i < PER / 8; ++i) {
        const int col = half * PER + i * 8;
        float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (row < p.seq_q && col < p.head_dim) sa3_load8(src + col, t);
#pragma unroll
        for (int e = 0; e < 8; ++e) x[i * 8 + e] = t[e];
    }
    /* Q is the caller's; the mean is the pre-pass's, which may still be finishing (grid_dep_wait).
     * Its 16-byte loads are issued behind Q's, so both latencies overlap. */
    grid_dep_wait();
#pragma unroll
    for (int i = 0; i < PER / 4; ++i) {
        const float4 m4 = reinterpret_cast<const float4 *>(kmean + half * PER)[i];
        km[4 * i] = m4.x;
        km[4 * i + 1] = m4.y;
        km[4 * i + 2] = m4.z;
        km[4 * i + 3] = m4.w;
    }
    float4 vs4 = make_float4(0.f, 0.f, 0.f, 0.f);
    if (tid < DP / 2)
        vs4 = tid < DP / 4 ? reinterpret_cast<const float4 *>(vscale)[tid]
                           : reinterpret_cast<const float4 *>(vfix)[tid - DP / 4];
    float amax = 0.f, qm = 0.f;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        amax = fmaxf(amax, fabsf(x[i]));
        qm = fmaf(x[i], km[i], qm);
    }
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
    qm += __shfl_xor_sync(0xffffffffu, qm, 1);
    const float inv = amax >= FLT_MIN ? 127.f / amax : 0.f;
#pragma unroll
    for (int c = 0; c < PER / 16; ++c) {
        uint32_t w[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            uint32_t v = 0;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int q = __float2int_rn(x[c * 16 + j * 4 + e] * inv);
                q = max(-127, min(127, q));
                v |= (uint32_t)(uint8_t)(int8_t)q << (8 * e);
            }
            w[j] = v;
        }
        *reinterpret_cast<uint4 *>(sq + swizzled_offset(r, half * (PER / 16) + c, DP)) =
            make_uint4(w[0], w[1], w[2], w[3]);
    }
    if (tid < DP / 2) reinterpret_cast<float4 *>(vs)[tid] = vs4;
    if (half == 0) {
        row_scale[r] = (amax / 127.f) * (p.scale * kLog2e);
        row_lse[r] = qm * p.scale;
    }
}

/* S = Q K^T over DP/32 k-steps (+32 bytes of both operands per step: +2 in the descriptor). */
template <int DP>
__device__ __forceinline__ void issue_qk(uint32_t (&s)[64], uint64_t dq, uint64_t dk) {
    wgmma_fence();
    wgmma_s8_n128_zero(s, dq, dk);
#pragma unroll
    for (int kk = 1; kk < DP / 32; ++kk) wgmma_s8_n128_acc(s, dq + 2 * kk, dk + 2 * kk);
    wgmma_commit();
}

template <int DP>
__device__ __forceinline__ void issue_pv(float (&ot)[DP / 2], const uint32_t (&pa)[4][4], uint64_t dv) {
    wgmma_fence();
    if constexpr (DP == 128) {
        wgmma_e4m3_n128_zero(ot, pa[0], dv);
#pragma unroll
        for (int kk = 1; kk < 4; ++kk) wgmma_e4m3_n128_acc(ot, pa[kk], dv + 2 * kk);
    } else {
        wgmma_e4m3_n64_zero(ot, pa[0], dv);
#pragma unroll
        for (int kk = 1; kk < 4; ++kk) wgmma_e4m3_n64_acc(ot, pa[kk], dv + 2 * kk);
    }
    wgmma_commit();
}

/* The new running max of this thread's two rows: m against the max over the quad's four lanes of
 * x0 (row r0) and x1 (row r1), each lane's max of its own scaled scores. */
__device__ __forceinline__ void quad_row_max(float x0, float x1, const float (&m)[2], float &mn0, float &mn1) {
    x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 1));
    x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 2));
    x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 1));
    x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 2));
    mn0 = fmaxf(m[0], x0);
    mn1 = fmaxf(m[1], x1);
}

/* Online softmax of one tile for this thread's two rows (r0: regs 4g, 4g+1; r1: 4g+2, 4g+3;
 * column 8g + 2t + e). MASK: keys past Sk, and with CAUSAL keys after the row, get p = 0. */
template <bool MASK, bool CAUSAL>
__device__ __forceinline__ void softmax_values(const uint32_t (&s)[64], float c0, float c1, float (&m)[2],
                                               float (&l)[2], float (&alpha)[2], float (&f)[64],
                                               int64_t key0, int64_t row0, int64_t row1, int64_t seq_k, int t) {
    float mn0, mn1;
    if (MASK) {
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int k = 0; k < 64; ++k) {
            const int64_t key = key0 + 8 * (k / 4) + 2 * t + (k & 1);
            const int64_t row = (k & 2) ? row1 : row0;
            const bool dead = key >= seq_k || (CAUSAL && key > row);
            const float v = dead ? -INFINITY : __int2float_rn((int)s[k]) * ((k & 2) ? c1 : c0);
            f[k] = v;
            if (k & 2) mx1 = fmaxf(mx1, v); else mx0 = fmaxf(mx0, v);
        }
        quad_row_max(mx0, mx1, m, mn0, mn1);
        const float nb0 = kLog2P - mn0, nb1 = kLog2P - mn1;
#pragma unroll
        for (int k = 0; k < 64; ++k) f[k] = sa3_exp2(f[k] + ((k & 2) ? nb1 : nb0));
    } else {
        int mx0 = (int)s[0], mx1 = (int)s[2];
#pragma unroll
        for (int g = 0; g < 16; ++g) {
            mx0 = max(mx0, max((int)s[4 * g], (int)s[4 * g + 1]));
            mx1 = max(mx1, max((int)s[4 * g + 2], (int)s[4 * g + 3]));
        }
        /* c >= 0, so the max of this thread's scaled scores is its scaled integer max; the lanes
         * of a quad have different K scales, so they compare scaled values. */
        quad_row_max(__int2float_rn(mx0) * c0, __int2float_rn(mx1) * c1, m, mn0, mn1);
        const float nb0 = kLog2P - mn0, nb1 = kLog2P - mn1;
#pragma unroll
        for (int k = 0; k < 64; ++k)
            f[k] = sa3_exp2(fmaf(__int2float_rn((int)s[k]), (k & 2) ? c1 : c0, (k & 2) ? nb1 : nb0));
    }
    alpha[0] = sa3_exp2(m[0] - mn0);
    alpha[1] = sa3_exp2(m[1] - mn1);
    m[0] = mn0;
    m[1] = mn1;
    float ls0 = 0.f, ls1 = 0.f;
#pragma unroll
    for (int k = 0; k < 64; ++k) {
        if (k & 2) ls1 += f[k]; else ls0 += f[k];
    }
    l[0] = fmaf(l[0], alpha[0], ls0);
    l[1] = fmaf(l[1], alpha[1], ls1);
}

/* P (the thread's 64 values, scaled into e4m3's range) into the P.V A fragments. */
__device__ __forceinline__ void pack_p(const float (&f)[64], uint32_t (&pa)[4][4]) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
        const int g0 = 16 * kk, g1 = 16 * kk + 4, g2 = 16 * kk + 8, g3 = 16 * kk + 12;
        pa[kk][0] = pack_e4m3(f[g0 + 0], f[g0 + 1], f[g1 + 0], f[g1 + 1]);
        pa[kk][1] = pack_e4m3(f[g0 + 2], f[g0 + 3], f[g1 + 2], f[g1 + 3]);
        pa[kk][2] = pack_e4m3(f[g2 + 0], f[g2 + 1], f[g3 + 0], f[g3 + 1]);
        pa[kk][3] = pack_e4m3(f[g2 + 2], f[g2 + 3], f[g3 + 2], f[g3 + 3]);
    }
}

template <bool MASK, bool CAUSAL>
__device__ __forceinline__ void softmax_tile(const uint32_t (&s)[64], float c0, float c1, float (&m)[2],
                                             float (&l)[2], float (&alpha)[2], uint32_t (&pa)[4][4],
                                             int64_t key0, int64_t row0, int64_t row1, int64_t seq_k, int t) {
    float f[64];
    softmax_values<MASK, CAUSAL>(s, c0, c1, m, l, alpha, f, key0, row0, row1, seq_k, t);
    pack_p(f, pa);
}

template <int DP, int NS, int NC, typename T, bool CAUSAL>
__global__ void __launch_bounds__(Roles<NC>::kThreads, 1)
    attn_kernel(const sa3_problem p, const Workspace w) {
    constexpr int BM = Roles<NC>::kBlockM;
    using L = Smem<DP, NS, NC>;
    extern __shared__ uint8_t smem_raw[];
    uint8_t *smem = reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
    int8_t *sq = reinterpret_cast<int8_t *>(smem + L::q_off);
    uint8_t *sk = smem + L::k_off;
    uint8_t *sv = smem + L::v_off;
    uint64_t *full_k = reinterpret_cast<uint64_t *>(smem + L::bar_off);
    uint64_t *full_v = full_k + NS, *empty_k = full_k + 2 * NS, *empty_v = full_k + 3 * NS;
    float *row_scale = reinterpret_cast<float *>(smem + L::row_off);
    float *row_lse = row_scale + BM;

    const int qt = CAUSAL ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x; /* heavy tiles first */
    const int64_t hq = blockIdx.y, b = blockIdx.z;
    const int64_t hk = hq / (p.heads_q / p.heads_kv);
    const int64_t bhk = b * p.heads_kv + hk;
    int ntiles = (int)w.nblk;
    if constexpr (CAUSAL && BM == kBlockN) {
        ntiles = min(ntiles, qt + 1); /* rows < (qt+1)*128 see keys < (qt+1)*128 */
    } else if constexpr (CAUSAL) {   /* rows < (qt+1)*BM see keys < (qt+1)*BM */
        ntiles = (int)min((int64_t)ntiles, ((int64_t)(qt + 1) * BM + kBlockN - 1) / kBlockN);
    }
    const int wg = threadIdx.x / 128;

    if (threadIdx.x == 0) {
#pragma unroll
        for (int s = 0; s < NS; ++s) {
            mbar_init(&full_k[s], 1);
            mbar_init(&full_v[s], 1);
            mbar_init(&empty_k[s], 4 * NC); /* one arrival per consumer warp */
            mbar_init(&empty_v[s], 4 * NC);
        }
        mbar_init_fence();
    }
    __syncthreads();

    if (wg == 0) {
        regs_dec<24>();
        if (threadIdx.x == 0) {
            grid_dep_wait(); /* the pre-pass's tiles */
            const uint64_t pol = l2_evict_last_policy();
            const int8_t *kt = w.kq + bhk * w.nblk * (int64_t)L::kK;
            const uint8_t *vt = w.vq + bhk * w.nblk * (int64_t)L::kV;
            for (int j = 0; j < ntiles; ++j) {
                const int s = j % NS;
                const uint32_t ph = (uint32_t)(j / NS) & 1u;
                mbar_wait(&empty_k[s], ph ^ 1u);
                mbar_arrive_expect_tx(&full_k[s], L::kK);
                bulk_g2s(sk + s * L::kK, kt + (int64_t)j * L::kK, L::kK, &full_k[s], pol);
                mbar_wait(&empty_v[s], ph ^ 1u);
                mbar_arrive_expect_tx(&full_v[s], L::kV);
                bulk_g2s(sv + s * L::kV, vt + (int64_t)j * L::kV, L::kV, &full_v[s], pol);
            }
        }
        return;
    }

    regs_inc<Roles<NC>::kConsumerRegs>();
    const int cw = wg - 1;
    const int tid = threadIdx.x - 128 * wg;
    const int warp = tid / 32, lane = tid % 32, t = lane & 3;
    const int64_t q0 = (int64_t)qt * BM + cw * 64;
    /* The epilogue's V scales are staged in shared memory with the Q load, where their load hides:
     * read from global memory between the output stores, each would wait out its own latency
     * (the compiler cannot move a load above a store that may alias it). */
    float *vs = reinterpret_cast<float *>(smem + L::vs_off) + cw * 2 * DP;
    load_quantize_q<DP, T>(p, w.kmean + bhk * DP, w.vscale + bhk * DP, w.vfix + bhk * DP, vs, sq + cw * L::kQ,
                           row_scale + cw * 64,
                           row_lse + cw * 64, b, hq, q0, tid);
    fence_proxy_async_smem();
    named_barrier_sync(1 + cw, 128);

    const int r0 = warp * 16 + (lane >> 2), r1 = r0 + 8;
    const float qs0 = row_scale[cw * 64 + r0], qs1 = row_scale[cw * 64 + r1];
    const int64_t row0 = q0 + r0, row1 = q0 + r1;
    const uint64_t dq = smem_desc(sq + cw * L::kQ, DP);
    /* This thread's K scale of tile j: its quad lane's key group (kKGroups per tile). */
    const float *kscale = w.kscale + bhk * w.nblk * kKGroups;
    auto k_scale = [&](int j) { return kscale[j * kKGroups + t]; };

    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    float o[DP / 2];
#pragma unroll
    for (int i = 0; i < DP / 2; ++i) o[i] = 0.f;
    uint32_t s[64];
    float ot[DP / 2];
    uint32_t pa[4][4];

    /* Two forms of the loop (cuda/hopper/NOTES.md has the measurements that chose them):
     * - overlapped (D = 128, two consumers, not causal): each tile's P.V runs under the next
     *   tile's softmax;
     * - serial (the rest): the O update runs under the next tile's QK^T (at D = 128 with three
     *   consumers it cannot: S, O and the P.V product would not fit in 160 registers, so the
     *   QK^T follows the O update), and the consumers take turns issuing their GEMMs, round
     *   robin (named barrier 1 + NC + c is consumer c's turn), so one's softmax runs under the
     *   others' tensor work (causal calls too). With three consumers at D = 128 a turn lasts from
     *   the P.V issue to the next QK^T's issue (the O update between them included), so one
     *   consumer at a time is between two softmaxes (NOTES.md v18). */
    constexpr bool kOverlapPV = DP == 128 && !CAUSAL && NC == 2;
    constexpr bool kLateQK = DP == 128 && NC == 3; /* 160 registers: S, O and the P.V product never all live */
    constexpr bool kPingPong = !kOverlapPV;
    constexpr int kTurn = 1 + NC; /* named barriers 1..NC: each consumer's own; then the turns */
    if (kPingPong && cw == NC - 1) named_barrier_arrive(kTurn, 256); /* consumer 0 issues first */
    mbar_wait(&full_k[0], 0);
    issue_qk<DP>(s, dq, smem_desc(sk, DP));
    float ks = k_scale(0);
    wgmma_wait<0>();
    fence_regs(s);
    if (lane == 0) mbar_arrive(&empty_k[0]);

    /* Both forms: O = O alpha + the P.V product just waited for. */
    auto fold_o = [&](const float (&a)[2]) {
#pragma unroll
        for (int i = 0; i < DP / 2; ++i) o[i] = fmaf(o[i], (i & 2) ? a[1] : a[0], ot[i]);
    };

    /* Serial form, one tile. MORE: the next tile's QK^T is issued behind this tile's P.V; the two
     * cases are separate instances so every wgmma wait is unconditional (ptxas otherwise serializes). */
    auto step = [&](int j, auto more_tag) {
        constexpr bool MORE = decltype(more_tag)::value;
        const int st = j % NS;
        const uint32_t ph = (uint32_t)(j / NS) & 1u;
        const float ks_next = MORE ? k_scale(j + 1) : 0.f;
        const int64_t key0 = (int64_t)j * kBlockN;
        const bool mask = key0 + kBlockN > p.seq_k || (CAUSAL && key0 + kBlockN - 1 > q0);
        float alpha[2];
        if (mask) {
            softmax_tile<true, CAUSAL>(s, qs0 * ks, qs1 * ks, m, l, alpha, pa, key0, row0, row1, p.seq_k, t);
        } else {
            softmax_tile<false, CAUSAL>(s, qs0 * ks, qs1 * ks, m, l, alpha, pa, key0, row0, row1, p.seq_k, t);
        }
        const int st1 = (j + 1) % NS;
        const uint32_t ph1 = (uint32_t)((j + 1) / NS) & 1u;
        /* kLateQK: the turns set the loop's period (each consumer waits for the others' GEMM
         * phases), so the V tile's wait, nearly always already satisfied, goes before the turn
         * rather than into it. Only the K wait stays in the turn: it overlaps the O update there,
         * and before the O update ptxas would issue the QK^T ahead of it and spill. */
        if constexpr (kLateQK) mbar_wait(&full_v[st], ph);
        if constexpr (kPingPong) named_barrier_sync(kTurn + cw, 256); /* my turn: the one before me issued */
        if constexpr (!kLateQK) mbar_wait(&full_v[st], ph);
        issue_pv<DP>(ot, pa, smem_desc(sv + st * L::kV, kBlockN));
        if constexpr (MORE && !kLateQK) {
            mbar_wait(&full_k[st1], ph1);
            issue_qk<DP>(s, dq, smem_desc(sk + st1 * L::kK, DP));
        }
        /* The next consumer's turn (kLateQK: after the next QK^T's issue, below); the last one gave
         * consumer 0 its first turn, so it skips its last. */
        if constexpr (kPingPong && !(kLateQK && MORE)) {
            if (MORE || cw != NC - 1) named_barrier_arrive(kTurn + (cw + 1) % NC, 256);
        }
        if constexpr (MORE && !kLateQK) {
            wgmma_wait<1>();
        } else {
            wgmma_wait<0>();
        }
        fence_regs(ot);
        if (lane == 0) mbar_arrive(&empty_v[st]);
        fold_o(alpha);
        if constexpr (MORE) {
            if constexpr (kLateQK) {
                mbar_wait(&full_k[st1], ph1);
                issue_qk<DP>(s, dq, smem_desc(sk + st1 * L::kK, DP));
                named_barrier_arrive(kTurn + (cw + 1) % NC, 256);
            }
            wgmma_wait<0>();
            fence_regs(s);
            if (lane == 0) mbar_arrive(&empty_k[st1]);
        }
        ks = ks_next;
    };

    /* Overlapped form. The softmax of tile j (its S in `s`) leaves P in fp32 (`f`) and its alpha in
     * `a_next`; `a_pend` is the alpha of the tile whose P.V is in flight, for the O update after it. */
    float a_pend[2], a_next[2];
    auto softmax_at = [&](int j, float ksj, float (&f)[64]) {
        const int64_t key0 = (int64_t)j * kBlockN;
        if (key0 + kBlockN > p.seq_k || (CAUSAL && key0 + kBlockN - 1 > q0)) {
            softmax_values<true, CAUSAL>(s, qs0 * ksj, qs1 * ksj, m, l, a_next, f, key0, row0, row1, p.seq_k, t);
        } else {
            softmax_values<false, CAUSAL>(s, qs0 * ksj, qs1 * ksj, m, l, a_next, f, key0, row0, row1, p.seq_k, t);
        }
    };
    /* One tile j: the next tile's QK^T is issued ahead of this tile's P.V, and the next tile's
     * softmax runs while the P.V does; P is packed only once the P.V is done (P's registers are
     * its operand). MORE as in the serial form. */
    auto step_overlap = [&](int j, auto more_tag) {
        constexpr bool MORE = decltype(more_tag)::value;
        const int st = j % NS, st1 = (j + 1) % NS;
        const float ks_next = MORE ? k_scale(j + 1) : 0.f;
        if constexpr (MORE) {
            mbar_wait(&full_k[st1], (uint32_t)((j + 1) / NS) & 1u);
            issue_qk<DP>(s, dq, smem_desc(sk + st1 * L::kK, DP));
        }
        mbar_wait(&full_v[st], (uint32_t)(j / NS) & 1u);
        issue_pv<DP>(ot, pa, smem_desc(sv + st * L::kV, kBlockN));
        if constexpr (!MORE) {
            wgmma_wait<0>();
            fence_regs(ot);
            if (lane == 0) mbar_arrive(&empty_v[st]);
            fold_o(a_pend);
            return;
        }
        wgmma_wait<1>(); /* the QK^T; the P.V may still run */
        fence_regs(s);
        if (lane == 0) mbar_arrive(&empty_k[st1]);
        float f[64];
        softmax_at(j + 1, ks_next, f);
        wgmma_wait<0>(); /* the P.V */
        fence_regs(ot);
        if (lane == 0) mbar_arrive(&empty_v[st]);
        fold_o(a_pend);
        pack_p(f, pa);
        a_pend[0] = a_next[0];
        a_pend[1] = a_next[1];
    };

    if constexpr (kOverlapPV) {
        {
            float f[64];
            softmax_at(0, ks, f);
            pack_p(f, pa);
        }
        a_pend[0] = a_next[0];
        a_pend[1] = a_next[1];
        for (int j = 0; j + 1 < ntiles; ++j) step_overlap(j, std::true_type{});
        step_overlap(ntiles - 1, std::false_type{});
    } else {
        for (int j = 0; j + 1 < ntiles; ++j) step(j, std::true_type{});
        step(ntiles - 1, std::false_type{});
    }

    /* Epilogue: O * vscale / l + vfix in the caller's layout and dtype; the LSE when asked for. */
    l[0] += __shfl_xor_sync(0xffffffffu, l[0], 1);
    l[0] += __shfl_xor_sync(0xffffffffu, l[0], 2);
    l[1] += __shfl_xor_sync(0xffffffffu, l[1], 1);
    l[1] += __shfl_xor_sync(0xffffffffu, l[1], 2);
    const float inv0 = l[0] > 0.f ? 1.f / l[0] : 0.f, inv1 = l[1] > 0.f ? 1.f / l[1] : 0.f;
    /* V's fix (the reference's v_mean_fix) goes to rows that saw a key; the others stay 0 */
    const float live0 = l[0] > 0.f ? 1.f : 0.f, live1 = l[1] > 0.f ? 1.f : 0.f;
    /* Through shared memory: from the fragments, a warp's store covers 8 rows with 16 bytes
     * each; staged, each row leaves as whole 16-byte chunks, 8 of a warp's lanes per row. */
    uint8_t *so = smem + L::o_off + cw * 64 * L::o_pitch;
#pragma unroll
    for (int g = 0; g < DP / 8; ++g) {
        const int col = 8 * g + 2 * t;
        const float2 v = *reinterpret_cast<const float2 *>(vs + col);
        const float2 f = *reinterpret_cast<const float2 *>(vs + DP + col);
        *reinterpret_cast<uint32_t *>(so + r0 * L::o_pitch + col * 2) =
            sa3_pack2<T>(fmaf(f.x, live0, o[4 * g] * v.x * inv0), fmaf(f.y, live0, o[4 * g + 1] * v.y * inv0));
        *reinterpret_cast<uint32_t *>(so + r1 * L::o_pitch + col * 2) =
            sa3_pack2<T>(fmaf(f.x, live1, o[4 * g + 2] * v.x * inv1), fmaf(f.y, live1, o[4 * g + 3] * v.y * inv1));
    }
    named_barrier_sync(1 + cw, 128);
    T *out = static_cast<T *>(p.o) + b * p.o_stride[0] + hq * p.o_stride[1];
    constexpr int kChunks = DP / 8; /* 16-byte chunks per row */
#pragma unroll
    for (int c = tid; c < 64 * kChunks; c += 128) {
        const int r = c / kChunks, cc = c % kChunks;
        const int64_t row = q0 + r;
        if (row < p.seq_q && cc * 8 < p.head_dim)
            *reinterpret_cast<uint4 *>(out + row * p.o_stride[2] + cc * 8) =
                *reinterpret_cast<const uint4 *>(so + r * L::o_pitch + cc * 16);
    }
    if (p.lse != nullptr && t == 0) {
        float *lrow = p.lse + b * p.lse_stride_b + hq * p.lse_stride_h;
        if (row0 < p.seq_q) lrow[row0] = (m[0] + __log2f(l[0]) - kLog2P) * kLn2 + row_lse[cw * 64 + r0];
        if (row1 < p.seq_q) lrow[row1] = (m[1] + __log2f(l[1]) - kLog2P) * kLn2 + row_lse[cw * 64 + r1];
    }
}

template <int DP, int NS, int NC, typename T, bool CAUSAL>
sa3_status launch_typed(const sa3_problem *p, const Workspace *w, cudaStream_t stream, char *err, size_t err_len) {
    using R = Roles<NC>;
    using L = Smem<DP, NS, NC>;
    constexpr auto kernel = attn_kernel<DP, NS, NC, T, CAUSAL>;
    SA3_CUDA_TRY(sa3_allow_dynamic_smem<kernel>(p->device, L::alloc), "hopper attention smem attribute");
    const dim3 grid((unsigned)((p->seq_q + R::kBlockM - 1) / R::kBlockM), (unsigned)p->heads_q, (unsigned)p->batch);
    SA3_CUDA_TRY(launch_overlapping(kernel, grid, dim3(R::kThreads), L::alloc, stream, *p, *w),
                 "hopper attention launch");
    return SA3_OK;
}

/* Time per query row of the three-consumer D = 128 loop (serial, 160 registers) relative to the
 * two-consumer one (overlapped, 240), as measured (NOTES.md). */
constexpr double kRowCost3 = 0.90;

/* 3 or 2 consumers for a non-causal D = 128 pass: the one whose whole waves of CTAs (1 per SM)
 * times the rows each CTA covers, at its row cost, come out shorter; 3 only where that is at
 * least 1% shorter (the per-row gain is small, a partial last wave of 192-row CTAs is not).
 * Causal D = 128 keeps 2: its masked loop spills at 160 registers. */
int consumers_d128(const sa3_problem *p, int sm_count) {
    if (p->is_causal || sm_count <= 0) return 2;
    constexpr int64_t bm2 = Roles<2>::kBlockM, bm3 = Roles<3>::kBlockM;
    const int64_t heads = p->batch * p->heads_q;
    const int64_t waves2 = (heads * ((p->seq_q + bm2 - 1) / bm2) + sm_count - 1) / sm_count;
    const int64_t waves3 = (heads * ((p->seq_q + bm3 - 1) / bm3) + sm_count - 1) / sm_count;
    return (double)(waves3 * bm3) * kRowCost3 < 0.99 * (double)(waves2 * bm2) ? 3 : 2;
}

template <int DP, typename T>
sa3_status launch_dp(const sa3_problem *p, const Workspace *w, int sm_count, cudaStream_t s, char *err, size_t n) {
    constexpr int NS = DP == 128 ? 3 : 4; /* keep in step with attention_smem_bytes */
    if constexpr (DP == 64) {
        return p->is_causal ? launch_typed<64, NS, 3, T, true>(p, w, s, err, n)
                            : launch_typed<64, NS, 3, T, false>(p, w, s, err, n);
    } else {
        if (p->is_causal) return launch_typed<128, NS, 2, T, true>(p, w, s, err, n);
        return consumers_d128(p, sm_count) == 3 ? launch_typed<128, NS, 3, T, false>(p, w, s, err, n)
                                                : launch_typed<128, NS, 2, T, false>(p, w, s, err, n);
    }
}

template <typename T>
sa3_status launch_t(const sa3_problem *p, const Workspace *w, int sm_count, cudaStream_t s, char *err, size_t n) {
    return w->dp == 64 ? launch_dp<64, T>(p, w, sm_count, s, err, n) : launch_dp<128, T>(p, w, sm_count, s, err, n);
}

/* The call restricted to K/V heads [h0, h0 + n) and their query heads (GQA ratio `ratio`). */
sa3_problem head_group(const sa3_problem &p, int64_t h0, int64_t n, int64_t ratio) {
    sa3_problem g = p;
    g.heads_kv = n;
    g.heads_q = n * ratio;
    g.k = static_cast<const char *>(p.k) + h0 * p.k_stride[1] * kElemBytes;
    g.v = static_cast<const char *>(p.v) + h0 * p.v_stride[1] * kElemBytes;
    g.q = static_cast<const char *>(p.q) + h0 * ratio * p.q_stride[1] * kElemBytes;
    g.o = static_cast<char *>(p.o) + h0 * ratio * p.o_stride[1] * kElemBytes;
    if (p.lse != nullptr) g.lse = p.lse + h0 * ratio * p.lse_stride_h;
    return g;
}

} // namespace

int attention_smem_bytes(int64_t head_dim) {
    /* the largest layout a call of this head dim may take */
    return padded_head_dim(head_dim) == 64 ? Smem<64, 4, 3>::alloc : Smem<128, 3, 3>::alloc;
}

sa3_status attention_launch(const sa3_problem *p, const sa3_options *opt, const sa3_launch_ctx *ctx, char *err,
                            size_t err_len) {
    const cudaStream_t stream = static_cast<cudaStream_t>(ctx->stream);
    sa3_device_guard guard;
    SA3_CUDA_TRY(guard.enter(p->device), "cudaSetDevice");
    /* One pass per group of K/V heads (kv_heads_per_pass); each reuses the whole workspace,
     * which stream order makes safe: a pass's pre-pass starts after the previous attention. */
    const int64_t per = kv_heads_per_pass(p->batch, p->heads_q, p->heads_kv, p->seq_q, p->seq_k, p->head_dim);
    const int64_t ratio = p->heads_q / p->heads_kv;
    for (int64_t h0 = 0; h0 < p->heads_kv; h0 += per) {
        const sa3_problem g = head_group(*p, h0, per < p->heads_kv - h0 ? per : p->heads_kv - h0, ratio);
        const Workspace w = workspace_layout(ctx->workspace, g.batch, g.heads_kv, g.seq_k, g.head_dim);
        const int sms = ctx->device.sm_count;
        sa3_status s = quant_launch(&g, &w, opt->smooth_k, sms, stream, err, err_len);
        if (s != SA3_OK) return s;
        s = p->dtype == SA3_DTYPE_BF16 ? launch_t<__nv_bfloat16>(&g, &w, sms, stream, err, err_len)
                                       : launch_t<__half>(&g, &w, sms, stream, err, err_len);
        if (s != SA3_OK) return s;
    }
    return SA3_OK;
}

} // namespace sa3h
