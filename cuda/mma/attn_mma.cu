/* attn_mma.cu - attention with mma.sync: INT8 QK^T (m16n8k32), P.V in 16-bit (m16n8k16) or
 * FP8 e4m3 (m16n8k32, sm89+; fp32 accumulate, or fp16 per KV tile added to fp32), fp32 online
 * softmax in the exp2 domain.
 *
 * CPU reference: csrc/sa3_reference.c (modes int8-fp16 / int8-fp8 / int8-fp8-f16acc, q_block = 16*MT,
 * k_block = 64). Tests: tests/test_gpu_mma.py. Benchmark: benchmarks/bench_attention.py.
 *
 * One CTA = 4 warps = BQ query rows of one (batch, head); each warp owns 16*MT rows and
 * walks all visible 64-key tiles. Per CTA:
 *   1. Q tile (caller's layout, cp.async, zero-filled past Sq and D) -> INT8 with one scale
 *      per row pair r, r+8 of each 16-row m-tile (fused here: Q never goes to global memory).
 *   2. For each 64-key tile (3-stage cp.async pipeline into swizzled shared tiles, sa3_tile;
 *      addresses precomputed per thread by sa3_kv_loader): S = Qi8 Ki8^T (int32), scaled
 *      to the log2 domain with q_scale * k_scale * sm_scale * log2(e), masked (Sk tail,
 *      causal; only in the few "edge" iterations), online softmax, then O += P V (and, at
 *      D <= 128, l += P 1).
 *   3. O / l written in the caller's layout and dtype; the row's LSE when asked for.
 * K comes INT8 from the workspace (quant_kv.cu). V comes straight from the caller (16-bit PV)
 * or FP8 from the workspace, transposed and key-permuted (FP8 PV).
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <atomic>
#include <type_traits>

#include "mma_configs.h"
#include "mma_workspace.cuh"
#include "mma_family.cuh"
#include "quant_kv.cuh"

namespace {

/* ---------------------------------------------------------------- mma wrappers */
/* ldmatrix on 32-bit shared addresses: per-lane bases are computed once; the loops step
 * them by compile-time amounts (sa3_tile::at: an XOR per distinct chunk step, the rest
 * folded into the instruction's immediate). */
__device__ __forceinline__ void sa3_ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void sa3_ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void sa3_mma_s8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <typename T>
struct sa3_half_ops;

template <>
struct sa3_half_ops<__nv_bfloat16> {
    static __device__ __forceinline__ float2 unpack(uint32_t x) {
        return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&x));
    }
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

template <>
struct sa3_half_ops<__half> {
    static __device__ __forceinline__ float2 unpack(uint32_t x) {
        return __half22float2(*reinterpret_cast<const __half2 *>(&x));
    }
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

__device__ __forceinline__ void sa3_mma_e4m3(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap(); /* the launcher never selects FP8 PV below sm89 */
#endif
}

/* FP8 e4m3 P.V with an fp16 accumulator (d: two f16x2 registers, rows g and g+8): the
 * double-rate form on GeForce sm_89/sm_120 (QMMA.16832.F16.E4M3); ptxas emulates it on sm_90a
 * (e4m3 -> f16 unpack + HMMA.16816.F16), so the H200 runs this mode too.
 *
 * Why an fp16 partial cannot overflow. Per KV tile, the partial of one output element is
 * h = sum over the tile's 64 keys of Pq_j * Vq_j, where Pq_j = e4m3(448 * p_j) with
 * p_j = 2^(s_j - m) <= 1 (m is the running max including this tile), so 0 <= Pq_j <= 448 (448
 * is e4m3's largest value: RN cannot round above it), and Vq_j = e4m3(V_j * 1.75 / max|V|)
 * with |Vq_j| <= 1.75 (1.75 is an e4m3 value, so RN stays at or below it). Hence
 *     |h| <= 64 * 448 * 1.75 = 50176 for the exact sum and for every exact partial sum.
 * Each fp16 rounding multiplies a magnitude by at most (1 + 2^-11), and there are at most 64
 * roundings per tile even if the hardware rounded after every single product; (1 + 2^-11)^64
 * < 1.032, so every rounded partial is <= 51780 < 65504 (fp16's largest finite value). The
 * margin also covers an internal accumulation as coarse as 2^-8 relative per step
 * ((1 + 2^-8)^64 * 50176 < 64430). The tile's partial then goes into the fp32 O (after O's
 * rescale by alpha), so nothing accumulates in fp16 across tiles. In general the condition is
 * BK * P_max * V_max * (1 + u)^BK <= 65504: with P_max = 448 and BK = 64, V_max <= 2.2 for
 * any u <= 2^-11; 1.75 = 448 / 2^8 keeps V's e4m3 codes those of the fp32-accumulate mode
 * divided by 256 (bar e4m3 subnormals, |V| < max|V| / 112), so the two modes differ only by
 * the fp16 rounding of the partials and of those tiny V values. */
__device__ __forceinline__ void sa3_mma_e4m3_f16(uint32_t (&d)[2], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f16.e4m3.e4m3.f16 {%0,%1}, {%2,%3,%4,%5}, {%6,%7}, "
                 "{%0,%1};\n"
                 : "+r"(d[0]), "+r"(d[1])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap(); /* the launcher never selects FP8 PV below sm89 */
#endif
}
/* o (fp32 accumulator layout: rows g, g, g+8, g+8) += the fp16 pair h (row g, row g+8) */
__device__ __forceinline__ void sa3_add_f16acc(float (&o)[4], const uint32_t (&h)[2]) {
    const float2 lo = __half22float2(*reinterpret_cast<const __half2 *>(&h[0]));
    const float2 hi = __half22float2(*reinterpret_cast<const __half2 *>(&h[1]));
    o[0] += lo.x;
    o[1] += lo.y;
    o[2] += hi.x;
    o[3] += hi.y;
}

/* blockIdx.y / .z read afresh (volatile: not merged with the prologue's reads, which would
 * keep them, or values derived from them, live through the KV loop) */
__device__ __forceinline__ unsigned sa3_ctaid_y() {
    unsigned v;
    asm volatile("mov.u32 %0, %%ctaid.y;" : "=r"(v));
    return v;
}
__device__ __forceinline__ unsigned sa3_ctaid_z() {
    unsigned v;
    asm volatile("mov.u32 %0, %%ctaid.z;" : "=r"(v));
    return v;
}

/* Two floats -> two e4m3 bytes (lo in the low byte), RN + satfinite like the reference. */
__device__ __forceinline__ uint32_t sa3_e4m3x2(float lo, float hi) {
    return (uint32_t)__nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, __NV_E4M3);
}

/* ---------------------------------------------------------------- shared-memory tiles */
/* A tile is rows of L bytes (L = 64 or a multiple of 128), read by ldmatrix in 16-byte
 * chunks 8 rows at a time and written by cp.async 16 bytes per thread, 8 consecutive chunks
 * per phase; each takes one wavefront only if its 8 chunks hit 8 distinct 16-byte bank groups. Rows are L
 * bytes apart (128-byte aligned lines) and chunk c of row r is stored at chunk c ^ key(r),
 * key(r) = r & 7 (L >= 128) or (r >> 1) & 3 (L = 64: two rows per line): each cp.async phase
 * fills one line, and 8 consecutive rows of one chunk land in 8 distinct bank groups.
 * (Padded rows would keep ldmatrix conflict-free but misalign the cp.async writes: NOTES.md.)
 * A lane's ldmatrix base holds its row's key and its own chunk (0 or 1), so steps by
 * multiples of 8 rows and even chunk counts are compile-time: an XOR on the chunk bits plus
 * an add. Tiles start 128-byte aligned (the static_assert in sa3_mma_cfg, and the 128-byte
 * aligned dynamic shared memory), so address bits 4-6 are the chunk within a line (its bank
 * group), and the XOR flips exactly those. */
template <int L>
struct sa3_tile {
    static_assert(L == 64 || L % 128 == 0, "whole 128-byte lines, or two 64-byte rows per line");
    static __device__ __forceinline__ int key(int r) { return L >= 128 ? (r & 7) : ((r >> 1) & 3); }
    /* byte offset of chunk c of row r */
    static __device__ __forceinline__ uint32_t off(int r, int c) { return (uint32_t)(r * L + ((c ^ key(r)) << 4)); }
    /* from a lane's base (chunk 0 or 1) to `rows` rows on (a multiple of 8: same key) and
     * `chunks` chunks on (even, so no carry into the lane's chunk bit; below 4 when L = 64,
     * where bit 6 is the row's half of the line) */
    static __device__ __forceinline__ uint32_t at(uint32_t base, int rows, int chunks) {
        return (base ^ (uint32_t)((chunks & 7) << 4)) + (uint32_t)(rows * L + (chunks >> 3) * 128);
    }
    /* a loader's pass i writes rows row0 + i * RPP, same chunk: the key is unchanged when RPP
     * is a multiple of 8; with RPP = 4 (L >= 128; row0 = tid / chunks-per-row < RPP always)
     * it gains bit 2 on odd passes */
    template <int RPP>
    static __device__ __forceinline__ uint32_t pass(uint32_t base, int i) {
        static_assert(RPP % 8 == 0 || (RPP == 4 && L >= 128), "swizzle key per pass");
        if constexpr (RPP % 8 != 0)
            return (base ^ (uint32_t)((i & 1) << 6)) + (uint32_t)(i * RPP * L);
        else
            return base + (uint32_t)(i * RPP * L);
    }
};

/* ---------------------------------------------------------------- configuration */
template <int DP_, int MT_, bool FP8_, bool QREG_, bool LSUM_ = false, int WARPS_ = 4,
          int STAGES_ = (DP_ <= 128 ? 3 : 2)>
struct sa3_mma_cfg {
    static constexpr int DP = DP_, MT = MT_;
    /* Row sums of P by one extra m16n8k16 per 16 keys against a ones B fragment (16-bit PV
     * only): 8 mmas per tile replace 64 FADDs plus the final quad shuffles, and the sum is of
     * the same rounded P that multiplies V. */
    static constexpr bool LSUM_MMA = LSUM_ && !FP8_;
    static constexpr bool FP8 = FP8_;
    /* FP8 P.V accumulated in fp16 per tile (sa3_fp8_f16acc below sets it) */
    static constexpr bool F16ACC = false;
    static_assert(!F16ACC || FP8_, "fp16 accumulation is a form of FP8 P.V");
    /* log2 of the factor P carries into P.V (and into l): FP8 P is scaled by 448 so it fills
     * e4m3's range; the epilogue divides it out of O (through l) and out of the LSE. */
    static constexpr float P_LOG2_SCALE = FP8_ ? 8.807354922057604f : 0.f;
    /* Q fragments held in registers for the whole KV loop, or re-read from shared memory per
     * tile (more shared-memory reads, 32 fewer registers: no spills at DP=128). */
    static constexpr bool QREG = QREG_;
    static constexpr int WARPS = WARPS_, THREADS = 32 * WARPS_;
    /* K/V tiles in flight: with 3, a buffer is refilled two iterations after its use, so
     * one barrier per tile suffices (2 stages keep DP=256 inside 227 KB for 2 CTAs/SM). */
    static constexpr int STAGES = STAGES_;
    static constexpr int BQ = WARPS * 16 * MT; /* query rows per CTA */
    static constexpr int BK = 64;              /* keys per tile = K quantization block */
    /* swizzled tiles (sa3_tile): INT8 Q and K rows of DP bytes; V rows of DP 16-bit values,
     * or FP8 V^T rows of BK bytes */
    static constexpr int Q8_STRIDE = DP;                  /* bytes, INT8 Q and K rows */
    static constexpr int V_ROWS = FP8 ? DP : BK;          /* V^T rows (FP8) or V rows */
    static constexpr int V_STRIDE = FP8 ? BK : 2 * DP;    /* bytes */
    using QK_TILE = sa3_tile<Q8_STRIDE>;
    using V_TILE_T = sa3_tile<V_STRIDE>;
    /* 16-bit Q staging (prologue only, read row-wise by one or two lanes per row), swizzled
     * like the tiles instead of padded: conflict-free either way, and unpadded it stays within
     * the K/V buffers it aliases at DP=128 FP8 with 2 stages (2 CTAs per 100 KB SM) */
    static constexpr int STAGE_STRIDE = 2 * DP;
    using STAGE_TILE = sa3_tile<STAGE_STRIDE>;
    static constexpr int Q8_BYTES = BQ * Q8_STRIDE;
    static constexpr int K_TILE = BK * Q8_STRIDE;
    static constexpr int V_TILE = V_ROWS * V_STRIDE;
    static constexpr int KV_BYTES = STAGES * (K_TILE + V_TILE);
    static constexpr int STAGE_BYTES = BQ * STAGE_STRIDE; /* aliases the K/V buffers */
    static constexpr int SMEM = Q8_BYTES + (KV_BYTES > STAGE_BYTES ? KV_BYTES : STAGE_BYTES);
    /* the fast-iteration count assumes a causal CTA's tiles reach STAGES - 1 past its first
     * masked one, so unchecked lookahead loads never go past the last tile it reads */
    static_assert(BQ >= (STAGES - 1) * BK, "n_fast needs BQ >= (STAGES - 1) * BK");
    static_assert(Q8_BYTES % 128 == 0 && K_TILE % 128 == 0 && V_TILE % 128 == 0, "tiles start line-aligned");
};

/* A FP8 configuration with P.V in the fp16-accumulate form (SA3_PV_FP8_F16ACC): same tiles,
 * same shared memory. */
template <typename C>
struct sa3_fp8_f16acc : C {
    static_assert(C::FP8, "fp16 accumulation is a form of FP8 P.V");
    static constexpr bool F16ACC = true;
};

/* ---------------------------------------------------------------- K/V tile loads */
/* Every thread copies the same 16-byte chunks of each K/V tile, so their addresses are worked
 * out once and a tile costs a pointer bump plus the copies (per-chunk div/mod and 64-bit
 * multiplies would cost more than the copies).
 * Strides are read from the kernel parameters (constant bank) when used, keeping the
 * loader's live state to six registers in a kernel at the 255-register limit. Tiles are
 * issued strictly in order 0, 1, 2, ... */
template <typename C>
struct sa3_kv_loader {
    static constexpr int DP = C::DP, BK = C::BK, THREADS = C::THREADS;
    /* INT8 K: BK rows of DP bytes */
    static constexpr int K_CPR = DP / 16, K_RPP = THREADS / K_CPR, K_PASSES = BK / K_RPP;
    /* 16-bit V: BK rows of DP elements (8 per chunk) */
    static constexpr int V_CPR = DP / 8, V_RPP = THREADS / V_CPR, V_PASSES = BK / V_RPP;
    /* FP8 V^T: DP rows of BK bytes */
    static constexpr int F_CPR = BK / 16, F_RPP = THREADS / F_CPR, F_PASSES = DP / F_RPP;
    static_assert(K_PASSES * K_RPP == BK && V_PASSES * V_RPP == BK && F_PASSES * F_RPP == DP, "tile split");

    const int8_t *k_src;   /* this thread's first K chunk of the next tile        */
    const uint8_t *v_src;  /* this thread's first V chunk of the next tile (bytes) */
    uint32_t k_dst, v_dst; /* shared address of this thread's first chunk, buffer 0 */

    __device__ __forceinline__ void init(unsigned tid, const int8_t *kq, const void *vg, const uint8_t *vq,
                                         int64_t v_stride_s, int64_t skp, uint32_t s_k, uint32_t s_v) {
        k_src = kq + (tid / K_CPR) * DP + (tid % K_CPR) * 16;
        k_dst = s_k + C::QK_TILE::off(tid / K_CPR, tid % K_CPR);
        if constexpr (C::FP8) {
            v_src = vq + (int64_t)(tid / F_CPR) * skp + (tid % F_CPR) * 16;
            v_dst = s_v + C::V_TILE_T::off(tid / F_CPR, tid % F_CPR);
        } else {
            v_src = static_cast<const uint8_t *>(vg) + (int64_t)(tid / V_CPR) * v_stride_s * 2 + (tid % V_CPR) * 16;
            v_dst = s_v + C::V_TILE_T::off(tid / V_CPR, tid % V_CPR);
        }
    }

    /* Copies of tile t into buffer buf (no commit). CHECKED: the tile may end past Sk or D may
     * be narrower than DP (zero-fill); unchecked calls are only made for whole tiles. */
    template <bool CHECKED>
    __device__ __forceinline__ void issue(int t, int buf, const sa3_attn_params &p, const sa3_mma_ws &w) {
        const uint32_t kd = k_dst + buf * C::K_TILE;
#pragma unroll
        for (int i = 0; i < K_PASSES; ++i)
            sa3_cp_async16_s(C::QK_TILE::template pass<K_RPP>(kd, i), k_src + i * K_RPP * DP);
        k_src += BK * DP;
        const uint32_t vd = v_dst + buf * C::V_TILE;
        const uint8_t *src = v_src;
        if constexpr (C::FP8) { /* V^T is padded to whole tiles in the workspace */
            const int64_t pass = (int64_t)F_RPP * w.skp;
#pragma unroll
            for (int i = 0; i < F_PASSES; ++i, src += pass)
                sa3_cp_async16_s(C::V_TILE_T::template pass<F_RPP>(vd, i), src);
            v_src += BK;
        } else {
            const int64_t pass = (int64_t)(V_RPP * 2) * p.v_stride_s;
            const int64_t keys_left = p.seq_k - (int64_t)t * BK;
            if (!CHECKED || (keys_left >= BK && DP == p.head_dim)) {
#pragma unroll
                for (int i = 0; i < V_PASSES; ++i, src += pass)
                    sa3_cp_async16_s(C::V_TILE_T::template pass<V_RPP>(vd, i), src);
            } else { /* last tile or columns past D: zeros, not garbage (0 * NaN = NaN) */
                const unsigned tid = threadIdx.x;
                const bool col_ok = (int)(tid % V_CPR) * 8 < p.head_dim;
#pragma unroll
                for (int i = 0; i < V_PASSES; ++i, src += pass) {
                    const bool ok = col_ok && (int)(tid / V_CPR) + i * V_RPP < keys_left;
                    sa3_cp_async16_s(C::V_TILE_T::template pass<V_RPP>(vd, i), ok ? src : p.v, ok ? 16 : 0);
                }
            }
            v_src += (int64_t)(BK * 2) * p.v_stride_s;
        }
    }
};

/* ---------------------------------------------------------------- the LSE epilogue */
/* The row's natural-log LSE, by the first lane of the quad holding it: log2 sum_j 2^s_j =
 * m + log2(l) - log2(P's scale) (l carries that scale: FP8 P.V), to natural log, plus
 * sm_scale * q.mean(K), the shift K smoothing took out of every score of the row, which the
 * prologue computed from the staged Q and parked in this very element (so no register holds
 * it through the KV loop; the loop's barriers make the store visible here). l == 0 (no
 * visible key; top-left causal rows always see key 0) gives -inf, as the C reference.
 * (b, hq) are read afresh from the special registers, so no prologue value is kept for this
 * past the loop. */
template <typename C>
__device__ __forceinline__ void sa3_write_lse(const sa3_attn_params &p, float m, float l, int64_t row, int lane) {
    if ((lane & 3) != 0 || row >= p.seq_q) return;
    float *dst = p.lse + (int64_t)sa3_ctaid_z() * p.lse_stride_b + (int64_t)sa3_ctaid_y() * p.lse_stride_h + row;
    const float shift = p.smooth_k ? *dst : 0.f;
    *dst = l > 0.f ? (m + log2f(l) - C::P_LOG2_SCALE) * 0.6931471805599453f + shift : -INFINITY;
}

/* ---------------------------------------------------------------- the kernel */
/* LSE: whether this instance writes the LSE (p.lse). A separate instance, so the LSE code costs
 * calls without it no registers: folded into one instance it made the loop spill (NOTES.md). */
template <typename T, typename C, bool LSE>
__global__ void __launch_bounds__(C::THREADS, 8 / C::WARPS) sa3_attn_mma_kernel(const sa3_attn_params p, const sa3_mma_ws w) {
    constexpr int DP = C::DP, MT = C::MT, BQ = C::BQ, BK = C::BK;
    constexpr int CPR = DP / 8; /* 16-byte chunks per 16-bit row */
    extern __shared__ __align__(128) uint8_t smem[];
    uint8_t *s_q8 = smem;
    uint8_t *s_k = smem + C::Q8_BYTES;
    uint8_t *s_v = s_k + C::STAGES * C::K_TILE;
    uint8_t *s_stage = s_k;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int64_t qb = p.is_causal ? (int64_t)(gridDim.x - 1 - blockIdx.x) : (int64_t)blockIdx.x;
    const int64_t hq = blockIdx.y, b = blockIdx.z;
    const int64_t hk = hq / (p.heads_q / p.heads_kv);
    const int64_t m0 = qb * BQ;
    const int64_t bh = b * p.heads_kv + hk;
    const int D = (int)p.head_dim;
    const T *qg = static_cast<const T *>(p.q) + b * p.q_stride_b + hq * p.q_stride_h;
    const T *vg = static_cast<const T *>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;
    const int8_t *kq = w.kq + bh * w.skp * DP;
    /* K scales are per (64-key block, thread column group): key j -> group (j % 8) / 2 */
    const float *kscale = w.kscale + bh * (w.skp / 16) + (lane & 3);
    const uint8_t *vq = C::FP8 ? w.vq + bh * DP * w.skp : nullptr;

    /* 1. Q tile -> staging (16-bit) -> per-warp INT8 */
    for (int i = tid; i < BQ * CPR; i += C::THREADS) {
        const int r = i / CPR, c = i % CPR;
        const int64_t row = m0 + r;
        const bool ok = row < p.seq_q && c * 8 < D;
        sa3_cp_async16(s_stage + C::STAGE_TILE::off(r, c), ok ? qg + row * p.q_stride_s + c * 8 : qg,
                       ok ? 16 : 0);
    }
    sa3_cp_async_commit();
    sa3_cp_async_wait<0>();
    __syncthreads();

    /* Q scales follow the mma layout: a thread's accumulators hold rows g and g+8 of each
     * 16-row m-tile, so rows (16i + r, 16i + r + 8) share one scale ("per-thread"
     * granularity, as in SageAttention2): finer than per-warp at no cost in the loop. Lane
     * group LPR handles one row; the pair partner sits 8 rows (8*LPR lanes) away. */
    const int wrow0 = warp * 16 * MT;
    constexpr int LPR = 32 / (16 * MT); /* lanes per row: 1 (MT=2) or 2 (MT=1) */
    constexpr int CPL = CPR / LPR;      /* 16-byte chunks per lane */
    const int my_row = wrow0 + lane / LPR;
    const uint8_t *stage_row = s_stage + my_row * C::STAGE_STRIDE;
    const int stage_c0 = (lane % LPR) * CPL; /* this lane's first 16-byte chunk of the row */
    float amax = 0.f;
#pragma unroll 4
    for (int c = 0; c < CPL; ++c) {
        uint4 raw = *reinterpret_cast<const uint4 *>(stage_row + (((stage_c0 + c) ^ (my_row & 7)) << 4));
        const T *h = reinterpret_cast<const T *>(&raw);
#pragma unroll
        for (int e = 0; e < 8; ++e) amax = fmaxf(amax, fabsf(static_cast<float>(h[e])));
    }
    if (LPR == 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 8 * LPR));
    {
        /* amax below FLT_MIN (zero or subnormal) counts as zero: 127/amax would overflow */
        const float q_inv = amax >= 1.17549435e-38f ? 127.f / amax : 0.f;
        const int q8_byte0 = (lane % LPR) * CPL * 8; /* this lane's first byte in its INT8 row */
#pragma unroll 4
        for (int c = 0; c < CPL; ++c) {
            uint4 raw = *reinterpret_cast<const uint4 *>(stage_row + (((stage_c0 + c) ^ (my_row & 7)) << 4));
            const T *h = reinterpret_cast<const T *>(&raw);
            uint32_t packed[2] = {0u, 0u};
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                int q = __float2int_rn(static_cast<float>(h[e]) * q_inv);
                q = max(-127, min(127, q));
                packed[e / 4] |= (uint32_t)(uint8_t)(int8_t)q << (8 * (e % 4));
            }
            const int byte = q8_byte0 + c * 8;
            *reinterpret_cast<uint2 *>(s_q8 + C::QK_TILE::off(my_row, byte >> 4) + (byte & 15)) =
                make_uint2(packed[0], packed[1]);
        }
    }
    /* The LSE's K-smoothing term of this lane group's row, sm_scale * q.mean(K) over the
     * staged 16-bit Q (zero past D, as the mean is), parked in the row's LSE element until the
     * epilogue adds the rest (sa3_write_lse). */
    if (LSE && p.smooth_k) {
        const float *km = w.kmean + bh * DP + (lane % LPR) * CPL * 8;
        float qk = 0.f;
#pragma unroll 4
        for (int c = 0; c < CPL; ++c) {
            uint4 raw = *reinterpret_cast<const uint4 *>(stage_row + (((stage_c0 + c) ^ (my_row & 7)) << 4));
            const T *h = reinterpret_cast<const T *>(&raw);
            const float4 k0 = *reinterpret_cast<const float4 *>(km + c * 8);
            const float4 k1 = *reinterpret_cast<const float4 *>(km + c * 8 + 4);
            qk = fmaf(static_cast<float>(h[0]), k0.x, qk);
            qk = fmaf(static_cast<float>(h[1]), k0.y, qk);
            qk = fmaf(static_cast<float>(h[2]), k0.z, qk);
            qk = fmaf(static_cast<float>(h[3]), k0.w, qk);
            qk = fmaf(static_cast<float>(h[4]), k1.x, qk);
            qk = fmaf(static_cast<float>(h[5]), k1.y, qk);
            qk = fmaf(static_cast<float>(h[6]), k1.z, qk);
            qk = fmaf(static_cast<float>(h[7]), k1.w, qk);
        }
        if (LPR == 2) qk += __shfl_xor_sync(0xffffffffu, qk, 1);
        const int64_t row = m0 + my_row;
        if (lane % LPR == 0 && row < p.seq_q) p.lse[b * p.lse_stride_b + hq * p.lse_stride_h + row] = p.sm_scale * qk;
    }
    /* this thread's accumulator rows (16mt + g, +8) -> the scale computed by that row's lanes */
    float q_scale[MT];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) q_scale[mt] = __shfl_sync(0xffffffffu, amax, (mt * 16 + lane / 4) * LPR) / 127.f;
    __syncwarp();
    /* per-lane ldmatrix bases: Q/K fragments (A row-major, B "col"), 16-bit V (.trans), FP8 V^T */
    using QT = typename C::QK_TILE;
    using VT = typename C::V_TILE_T;
    const uint32_t q8_lane = sa3_smem_addr(s_q8) + QT::off(wrow0 + (lane & 15), lane >> 4);
    const uint32_t k_lane = sa3_smem_addr(s_k) + QT::off((lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1);
    const uint32_t v_lane = C::FP8 ? sa3_smem_addr(s_v) + VT::off((lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1)
                                   : sa3_smem_addr(s_v) + VT::off((lane & 7) + ((lane >> 3) & 1) * 8, lane >> 4);
    uint32_t qa[C::QREG ? MT : 1][C::QREG ? DP / 32 : 1][4];
    if constexpr (C::QREG) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int kc = 0; kc < DP / 32; ++kc) sa3_ldsm_x4(qa[mt][kc], QT::at(q8_lane, mt * 16, kc * 2));
    }
    __syncthreads(); /* staging aliases the K/V buffers */

    /* 2. KV tiles */
    const float scale_log2 = p.sm_scale * 1.4426950408889634f;
    float q_factor[MT];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) q_factor[mt] = q_scale[mt] * scale_log2;
    const int64_t kv_end = p.is_causal ? min(p.seq_k, m0 + BQ) : p.seq_k;
    const int n_tiles = (int)sa3_ceil_div(kv_end, BK);

    sa3_kv_loader<C> loader;
    loader.init(tid, kq, vg, vq, p.v_stride_s, w.skp, sa3_smem_addr(s_k), sa3_smem_addr(s_v));

    float o[MT][DP / 8][4];
    float m_i[MT][2], l_i[MT][2];
    float l_acc[MT][4]; /* LSUM_MMA: P times ones; each register holds its row's full sum */
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int dn = 0; dn < DP / 8; ++dn)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[mt][dn][e] = 0.f;
        m_i[mt][0] = m_i[mt][1] = -INFINITY;
        l_i[mt][0] = l_i[mt][1] = 0.f;
        l_acc[mt][0] = l_acc[mt][1] = l_acc[mt][2] = l_acc[mt][3] = 0.f;
    }

#pragma unroll
    for (int t = 0; t < C::STAGES - 1; ++t) {
        if (t < n_tiles) loader.template issue<true>(t, t, p, w);
        sa3_cp_async_commit(); /* empty groups keep the wait counts uniform */
    }
    int buf = 0;

    /* One K/V tile. EDGE iterations may see a partial or causal-diagonal tile or load one
     * past the end; the others (all but a few per CTA) have no mask and no bounds checks,
     * which leaves ptxas fewer branches to schedule around (exp2s interleave with P.V). */
    auto kv_tile = [&](const int j, auto edge_tag) {
        constexpr bool EDGE = decltype(edge_tag)::value;
        sa3_cp_async_wait<C::STAGES - 2>(); /* tile j has landed (this thread's copies) */
        __syncthreads();                    /* ... everyone's; and tile j-1's buffer is free */
        { /* tile j + STAGES - 1 goes into the buffer tile j - 1 used (free after the barrier) */
            const int t = j + C::STAGES - 1;
            const int load_buf = buf == 0 ? C::STAGES - 1 : buf - 1;
            if constexpr (EDGE) {
                if (t < n_tiles) loader.template issue<true>(t, load_buf, p, w);
            } else {
                loader.template issue<false>(t, load_buf, p, w);
            }
            sa3_cp_async_commit();
        }
        const uint32_t ck = k_lane + buf * C::K_TILE;
        const uint32_t cv = v_lane + buf * C::V_TILE;
        buf = buf + 1 == C::STAGES ? 0 : buf + 1;
        const float k_scale = kscale[4 * j];

        /* Accumulators start at the bit pattern of 1.5*2^23: the mma's integer add then
         * leaves float(1.5*2^23 + acc) in each register, exact for |acc| < 2^22 (an INT8
         * dot over 256 channels is at most 127*127*256 < 2^22). No I2F conversions, which
         * run on the same slow unit as exp2. */
        int s[MT][8][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0x4B400000;
#pragma unroll
        for (int kc = 0; kc < DP / 32; ++kc) {
            uint32_t qf[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                if constexpr (C::QREG) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) qf[mt][e] = qa[mt][kc][e];
                } else {
                    sa3_ldsm_x4(qf[mt], QT::at(q8_lane, mt * 16, kc * 2));
                }
            }
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                uint32_t bk[4];
                sa3_ldsm_x4(bk, QT::at(ck, np * 16, kc * 2));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    sa3_mma_s8(s[mt][2 * np], qf[mt], bk[0], bk[1]);
                    sa3_mma_s8(s[mt][2 * np + 1], qf[mt], bk[2], bk[3]);
                }
            }
        }

        /* sf: biased scores 1.5*2^23 + acc (exact floats), -inf where masked; then P */
        float sf[MT][8][4];
        const int64_t col0 = (int64_t)j * BK;
        const bool need_mask = EDGE && (col0 + BK > p.seq_k || (p.is_causal && col0 + BK - 1 > m0));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) sf[mt][nt][e] = __int_as_float(s[mt][nt][e]);
        if (EDGE && need_mask) {
            /* masks in int: key offset inside the tile vs. the limits of this warp's rows */
            const int col_lim = (int)(p.seq_k - col0 < BK ? p.seq_k - col0 : BK);
            const int64_t diag = m0 + wrow0 - col0; /* key c visible to warp row r iff c <= r + diag */
            const int diag_c = (int)(diag > 2 * BK ? 2 * BK : (diag < -2 * BK - 16 * MT ? -2 * BK - 16 * MT : diag));
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int c = nt * 8 + 2 * (lane & 3) + (e & 1);
                        const int r = mt * 16 + (lane >> 2) + (e >> 1) * 8;
                        if (c >= col_lim || (p.is_causal && c > r + diag_c)) sf[mt][nt][e] = -INFINITY;
                    }
        }

        float alpha[MT][2];
        /* online softmax of m-tile mt: running max, P (in sf), row sums */
        auto softmax_tile = [&](const int mt) {
            /* log2-domain factor; clamped > 0 so -inf * factor stays -inf (never NaN) */
            const float kf = fmaxf(q_factor[mt] * k_scale, 1e-30f);
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                /* tree reductions (max, and the row sum below): a serial chain of 16 dependent
                 * ops is latency the two warps per scheduler cannot hide */
                float mx8[8];
#pragma unroll
                for (int nt = 0; nt < 8; ++nt) mx8[nt] = fmaxf(sf[mt][nt][2 * r], sf[mt][nt][2 * r + 1]);
#pragma unroll
                for (int w2 = 4; w2 >= 1; w2 /= 2)
#pragma unroll
                    for (int i = 0; i < w2; ++i) mx8[i] = fmaxf(mx8[i], mx8[i + w2]);
                float mx = mx8[0];
                /* scale before reducing over the quad: its 4 lanes hold different key groups,
                 * so different K scales */
                mx = (mx - 12582912.0f) * kf;
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float m_new = fmaxf(m_i[mt][r], mx);
                const float m_use = m_new == -INFINITY ? 0.f : m_new;
                alpha[mt][r] = sa3_exp2(m_i[mt][r] - m_use);
                m_i[mt][r] = m_new;
                /* p = exp2(acc*kf - m) as one FFMA: (bias+acc)*kf + (-bias*kf - m). FP8 PV
                 * folds P's 448 scale in here too (l then carries it, the epilogue divides). */
                const float c = -(12582912.0f * kf) - m_use + C::P_LOG2_SCALE;
                if constexpr (C::LSUM_MMA) {
#pragma unroll
                    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                        for (int e = 2 * r; e < 2 * r + 2; ++e) sf[mt][nt][e] = sa3_exp2(fmaf(sf[mt][nt][e], kf, c));
                } else {
                float rs4[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                    for (int e = 2 * r; e < 2 * r + 2; ++e) {
                        const float pe = sa3_exp2(fmaf(sf[mt][nt][e], kf, c));
                        sf[mt][nt][e] = pe;
                        rs4[nt % 4] += pe;
                    }
                l_i[mt][r] = l_i[mt][r] * alpha[mt][r] + ((rs4[0] + rs4[1]) + (rs4[2] + rs4[3]));
                }
            }
        };
        auto rescale_tile = [&](const int mt) {
            if constexpr (C::LSUM_MMA) {
                l_acc[mt][0] *= alpha[mt][0];
                l_acc[mt][1] *= alpha[mt][0];
                l_acc[mt][2] *= alpha[mt][1];
                l_acc[mt][3] *= alpha[mt][1];
            }
#pragma unroll
            for (int dn = 0; dn < DP / 8; ++dn) {
                o[mt][dn][0] *= alpha[mt][0];
                o[mt][dn][1] *= alpha[mt][0];
                o[mt][dn][2] *= alpha[mt][1];
                o[mt][dn][3] *= alpha[mt][1];
            }
        };
        /* O += P V for m-tiles [mt0, mt1) */
        auto pv_tiles = [&](const int mt0, const int mt1) {
            if constexpr (!C::FP8) {
#pragma unroll
                for (int kc = 0; kc < BK / 16; ++kc) {
                    uint32_t pa[MT][4];
#pragma unroll
                    for (int mt = mt0; mt < mt1; ++mt) {
                        pa[mt][0] = sa3_pack2<T>(sf[mt][2 * kc][0], sf[mt][2 * kc][1]);
                        pa[mt][1] = sa3_pack2<T>(sf[mt][2 * kc][2], sf[mt][2 * kc][3]);
                        pa[mt][2] = sa3_pack2<T>(sf[mt][2 * kc + 1][0], sf[mt][2 * kc + 1][1]);
                        pa[mt][3] = sa3_pack2<T>(sf[mt][2 * kc + 1][2], sf[mt][2 * kc + 1][3]);
                        if constexpr (C::LSUM_MMA) {
                            const uint32_t one2 = sa3_pack2<T>(1.f, 1.f);
                            sa3_half_ops<T>::mma(l_acc[mt], pa[mt], one2, one2);
                        }
                    }
#pragma unroll
                    for (int dp = 0; dp < DP / 16; ++dp) {
                        uint32_t bv[4];
                        sa3_ldsm_x4_trans(bv, VT::at(cv, kc * 16, dp * 2));
#pragma unroll
                        for (int mt = mt0; mt < mt1; ++mt) {
                            sa3_half_ops<T>::mma(o[mt][2 * dp], pa[mt], bv[0], bv[1]);
                            sa3_half_ops<T>::mma(o[mt][2 * dp + 1], pa[mt], bv[2], bv[3]);
                        }
                    }
                }
            } else if constexpr (!C::F16ACC) {
#pragma unroll
                for (int kc = 0; kc < BK / 32; ++kc) {
                    uint32_t pa[MT][4];
#pragma unroll
                    for (int mt = mt0; mt < mt1; ++mt) {
#pragma unroll
                        for (int half = 0; half < 2; ++half) { /* a0/a1: tiles 4kc,4kc+1; a2/a3: 4kc+2,4kc+3 */
                            const int t0 = 4 * kc + 2 * half;
                            pa[mt][2 * half] = sa3_e4m3x2(sf[mt][t0][0], sf[mt][t0][1]) |
                                               sa3_e4m3x2(sf[mt][t0 + 1][0], sf[mt][t0 + 1][1]) << 16;
                            pa[mt][2 * half + 1] = sa3_e4m3x2(sf[mt][t0][2], sf[mt][t0][3]) |
                                                   sa3_e4m3x2(sf[mt][t0 + 1][2], sf[mt][t0 + 1][3]) << 16;
                        }
                    }
#pragma unroll
                    for (int np = 0; np < DP / 16; ++np) {
                        uint32_t bv[4];
                        sa3_ldsm_x4(bv, VT::at(cv, np * 16, kc * 2));
#pragma unroll
                        for (int mt = mt0; mt < mt1; ++mt) {
                            sa3_mma_e4m3(o[mt][2 * np], pa[mt], bv[0], bv[1]);
                            sa3_mma_e4m3(o[mt][2 * np + 1], pa[mt], bv[2], bv[3]);
                        }
                    }
                }
            } else {
                /* FP8 with fp16 accumulation: the whole tile's P fragments first, then per 16
                 * columns of V both 32-key steps into a zeroed fp16 pair, added to the fp32 O
                 * (the tile's partial is bounded: sa3_mma_e4m3_f16) */
                uint32_t pa[BK / 32][MT][4];
#pragma unroll
                for (int kc = 0; kc < BK / 32; ++kc)
#pragma unroll
                    for (int mt = mt0; mt < mt1; ++mt)
#pragma unroll
                        for (int half = 0; half < 2; ++half) {
                            const int t0 = 4 * kc + 2 * half;
                            pa[kc][mt][2 * half] = sa3_e4m3x2(sf[mt][t0][0], sf[mt][t0][1]) |
                                                   sa3_e4m3x2(sf[mt][t0 + 1][0], sf[mt][t0 + 1][1]) << 16;
                            pa[kc][mt][2 * half + 1] = sa3_e4m3x2(sf[mt][t0][2], sf[mt][t0][3]) |
                                                       sa3_e4m3x2(sf[mt][t0 + 1][2], sf[mt][t0 + 1][3]) << 16;
                        }
#pragma unroll
                for (int np = 0; np < DP / 16; ++np) {
                    uint32_t bv[BK / 32][4];
#pragma unroll
                    for (int kc = 0; kc < BK / 32; ++kc) sa3_ldsm_x4(bv[kc], VT::at(cv, np * 16, kc * 2));
#pragma unroll
                    for (int mt = mt0; mt < mt1; ++mt) {
                        uint32_t h0[2] = {0u, 0u}, h1[2] = {0u, 0u};
#pragma unroll
                        for (int kc = 0; kc < BK / 32; ++kc) {
                            sa3_mma_e4m3_f16(h0, pa[kc][mt], bv[kc][0], bv[kc][1]);
                            sa3_mma_e4m3_f16(h1, pa[kc][mt], bv[kc][2], bv[kc][3]);
                        }
                        sa3_add_f16acc(o[mt][2 * np], h0);
                        sa3_add_f16acc(o[mt][2 * np + 1], h1);
                    }
                }
            }
        };

#pragma unroll
        for (int mt = 0; mt < MT; ++mt) softmax_tile(mt);
        /* Rescale O only when some row's max moved (rare after the first tiles of a long
         * sequence): multiplying by exactly 1 is skipped, the result is bit-identical. An
         * unconditional rescale would let ptxas start P.V before the last softmax, but it
         * spills at 255 registers (NOTES.md). */
        bool moved = false;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) moved |= alpha[mt][0] != 1.f || alpha[mt][1] != 1.f;
        if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) rescale_tile(mt);
        }
        pv_tiles(0, MT);
    };

    /* iterations with no mask and whole-tile loads: tile j is before the Sk tail and the
     * causal diagonal, and tile j + STAGES - 1 (loaded during j) is whole. Only the 16-bit V
     * read from the caller can end early; INT8 K and FP8 V^T are padded in the workspace. */
    const int n_whole = C::FP8 ? n_tiles : (D == DP ? (int)(p.seq_k / BK) : 0);
    int64_t n_unmasked = p.seq_k / BK;
    if (p.is_causal) n_unmasked = min(n_unmasked, m0 / BK);
    const int n_fast = (int)max((int64_t)0, min(n_unmasked, (int64_t)n_whole - (C::STAGES - 1)));
    int j = 0;
    for (; j < n_fast; ++j) kv_tile(j, std::false_type{});
    for (; j < n_tiles; ++j) kv_tile(j, std::true_type{});

    /* 3. epilogue: O / l in the caller's layout, and the LSE when asked for */
    T *og = static_cast<T *>(p.o) + b * p.o_stride_b + hq * p.o_stride_h;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float l = l_i[mt][r];
            if constexpr (C::LSUM_MMA) {
                l = l_acc[mt][2 * r]; /* already summed over all keys by the mma */
            } else {
                l += __shfl_xor_sync(0xffffffffu, l, 1);
                l += __shfl_xor_sync(0xffffffffu, l, 2);
            }
            const float inv_l = l > 0.f ? 1.f / l : 0.f;
            const float live = l > 0.f ? 1.f : 0.f; /* V's fix goes to rows that saw a key */
            const int64_t row = m0 + wrow0 + mt * 16 + (lane >> 2) + r * 8;
            if constexpr (LSE) sa3_write_lse<C>(p, m_i[mt][r], l, row, lane);
            if (row >= p.seq_q) continue;
#pragma unroll
            for (int dn = 0; dn < DP / 8; ++dn) {
                const int col = dn * 8 + 2 * (lane & 3);
                if (col >= D) continue;
                float x0 = o[mt][dn][2 * r] * inv_l, x1 = o[mt][dn][2 * r + 1] * inv_l;
                if constexpr (C::FP8) { /* l carries P's 448; V's scale is max|V|/448; then V's fix */
                    x0 = fmaf(w.vfix[bh * DP + col], live, x0 * w.vscale[bh * DP + col]);
                    x1 = fmaf(w.vfix[bh * DP + col + 1], live, x1 * w.vscale[bh * DP + col + 1]);
                }
                *reinterpret_cast<uint32_t *>(og + row * p.o_stride_s + col) = sa3_pack2<T>(x0, x1);
            }
        }
}

template <typename T, typename C>
sa3_status sa3_attn_launch(const sa3_attn_params *p, const sa3_mma_ws *w, cudaStream_t stream, char *err,
                           size_t err_len) {
    /* C::SMEM fits the device: the family's supports() compared it with the opt-in limit
     * (sa3_mma_smem_bytes) before anything was enqueued. */
    const int variant = p->lse != nullptr ? 1 : 0;
    constexpr auto kernel_lse = sa3_attn_mma_kernel<T, C, true>, kernel_plain = sa3_attn_mma_kernel<T, C, false>;
    const auto kernel = variant ? kernel_lse : kernel_plain;
    const bool known = p->device >= 0 && p->device < 64;
    SA3_CUDA_TRY(variant ? sa3_allow_dynamic_smem<kernel_lse>(p->device, C::SMEM)
                         : sa3_allow_dynamic_smem<kernel_plain>(p->device, C::SMEM),
                 "cudaFuncSetAttribute");
    /* Consumer limits: the SM's carveout as on the emulated card (-1 = the driver's choice). Set
     * only when it changes, per kernel and device; held as value + 1 so the zero-initialised
     * state means "never set" = -1, and calls outside consumer limits never make this call. A
     * race sets the same value twice. */
    static std::atomic<int> carveout_plus1[2][64];
    if (!known ? p->smem_carveout != -1
               : carveout_plus1[variant][p->device].load(std::memory_order_relaxed) != p->smem_carveout + 1) {
        SA3_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, p->smem_carveout),
                     "cudaFuncSetAttribute");
        if (known) carveout_plus1[variant][p->device].store(p->smem_carveout + 1, std::memory_order_relaxed);
    }
    const dim3 grid((unsigned)sa3_ceil_div(p->seq_q, C::BQ), (unsigned)p->heads_q, (unsigned)p->batch);
    kernel<<<grid, C::THREADS, C::SMEM, stream>>>(*p, *w);
    SA3_LAUNCH_CHECK("attn_mma launch");
    return SA3_OK;
}

/* The configurations (cuda/mma/mma_configs.h: one row per GPU class, padded head dim and P.V
 * mode; the measurements behind each: cuda/mma/NOTES.md), instantiated for both dtypes. */
struct sa3_cfg_entry {
    sa3_mma_class cls;
    int dp;
    sa3_pv_mode pv;
    int smem; /* dynamic shared memory, bytes */
    int mt, warps, stages, ctas;
    sa3_status (*launch[2])(const sa3_attn_params *, const sa3_mma_ws *, cudaStream_t, char *, size_t); /* f16, bf16 */
};

template <typename C>
constexpr bool sa3_fits_class(sa3_mma_class cls, int ctas) {
    /* per block: the opt-in limit; per SM: CTAS blocks, each with its static reserve and the
     * driver's 1 KB per block */
    return cls == SA3_MMA_SMALL
               ? C::SMEM + SA3_MMA_STATIC_SMEM <= 99 * 1024 && ctas * (C::SMEM + SA3_MMA_STATIC_SMEM + 1024) <= 100 * 1024
               : C::SMEM + SA3_MMA_STATIC_SMEM <= 227 * 1024 && ctas * (C::SMEM + SA3_MMA_STATIC_SMEM + 1024) <= 228 * 1024;
}

/* A row's kernel configuration: FP8_F16ACC rows are FP8 tiles with the fp16-accumulate P.V */
template <typename C, bool F16ACC>
struct sa3_pv_form {
    using type = C;
};
template <typename C>
struct sa3_pv_form<C, true> {
    using type = sa3_fp8_f16acc<C>;
};
template <int DP, sa3_pv_mode PV, int MT, bool QREG, bool LSUM, int WARPS, int STAGES>
using sa3_row_cfg = typename sa3_pv_form<sa3_mma_cfg<DP, MT, PV != SA3_PV_F16, QREG, LSUM, WARPS, STAGES>,
                                         PV == SA3_PV_FP8_F16ACC>::type;
#define SA3_MMA_CFG_TYPE(dp, pv, mt, qreg, lsum, warps, stages) \
    sa3_row_cfg<dp, SA3_PV_##pv, mt, qreg != 0, lsum != 0, warps, stages>
#define SA3_MMA_ASSERT_ROW(cls, dp, pv, mt, qreg, lsum, warps, stages, ctas)                                      \
    static_assert(sa3_fits_class<SA3_MMA_CFG_TYPE(dp, pv, mt, qreg, lsum, warps, stages)>(SA3_MMA_##cls, ctas),   \
                  "mma_configs.h row " #cls " DP=" #dp " " #pv ": shared memory exceeds the class's limits");     \
    static_assert(ctas * 32 * (warps) <= 256, "CTAS x threads at 255 registers each must fit 64K registers");
SA3_MMA_CONFIGS(SA3_MMA_ASSERT_ROW)
#undef SA3_MMA_ASSERT_ROW

#define SA3_MMA_ENTRY(cls, dp, pv, mt, qreg, lsum, warps, stages, ctas)                                   \
    {SA3_MMA_##cls, dp, SA3_PV_##pv, SA3_MMA_CFG_TYPE(dp, pv, mt, qreg, lsum, warps, stages)::SMEM,        \
     mt, warps, stages, ctas,                                                                               \
     {&sa3_attn_launch<__half, SA3_MMA_CFG_TYPE(dp, pv, mt, qreg, lsum, warps, stages)>,                   \
      &sa3_attn_launch<__nv_bfloat16, SA3_MMA_CFG_TYPE(dp, pv, mt, qreg, lsum, warps, stages)>}},
const sa3_cfg_entry sa3_cfg_table[] = {SA3_MMA_CONFIGS(SA3_MMA_ENTRY)};
#undef SA3_MMA_ENTRY
#undef SA3_MMA_CFG_TYPE
constexpr int sa3_cfg_count = (int)(sizeof sa3_cfg_table / sizeof sa3_cfg_table[0]);

const sa3_cfg_entry *sa3_cfg_find(sa3_mma_class cls, int dp, sa3_pv_mode pv) {
    for (int i = 0; i < sa3_cfg_count; ++i)
        if (sa3_cfg_table[i].cls == cls && sa3_cfg_table[i].dp == dp && sa3_cfg_table[i].pv == pv) return &sa3_cfg_table[i];
    return nullptr;
}

} // namespace

int sa3_mma_smem_bytes(int64_t head_dim, sa3_pv_mode pv_mode, sa3_mma_class cls) {
    const sa3_cfg_entry *e = sa3_cfg_find(cls, sa3_padded_head_dim(head_dim), pv_mode);
    return e != nullptr ? e->smem : -1;
}

void sa3_mma_describe(int64_t head_dim, sa3_pv_mode pv_mode, sa3_mma_class cls, int smem_per_sm, char *out,
                      size_t out_len) {
    const sa3_cfg_entry *e = sa3_cfg_find(cls, sa3_padded_head_dim(head_dim), pv_mode);
    if (e == nullptr) {
        snprintf(out, out_len, "no configuration");
        return;
    }
    const int per_block = e->smem + SA3_MMA_STATIC_SMEM + 1024; /* + the driver's reserve */
    const int by_regs = 256 / (32 * e->warps);                  /* 255 registers a thread */
    int ctas = smem_per_sm / per_block;
    if (ctas > by_regs) ctas = by_regs;
    snprintf(out, out_len,
             "%s DP=%d %s P.V: %d warps x %d m-tiles (%d query rows), %d K/V stages, %d B dynamic shared memory, "
             "%d CTA(s) per SM here (sized for %d)",
             cls == SA3_MMA_SMALL ? "small-smem" : "large-smem", e->dp,
             pv_mode == SA3_PV_FP8_F16ACC ? "FP8 (fp16-accumulated)" : pv_mode == SA3_PV_FP8 ? "FP8" : "16-bit",
             e->warps, e->mt, 16 * e->mt * e->warps, e->stages, e->smem, ctas, e->ctas);
}

int sa3_mma_class_smem_max(sa3_mma_class cls) {
    int m = 0;
    for (int i = 0; i < sa3_cfg_count; ++i)
        if (sa3_cfg_table[i].cls == cls && sa3_cfg_table[i].smem > m) m = sa3_cfg_table[i].smem;
    return m;
}

sa3_status sa3_mma_run(const sa3_attn_params *p, void *stream_ptr, char *err, size_t err_len) {
    const sa3_mma_ws w = sa3_mma_ws_layout(p->workspace, p->batch, p->heads_kv, p->seq_k, p->head_dim,
                                           sa3_pv_is_fp8(p->pv_mode));
    if (w.bytes > p->workspace_bytes) {
        snprintf(err, err_len, "workspace too small: %zu < %zu bytes", p->workspace_bytes, w.bytes);
        return SA3_ERR_VALUE;
    }
    const sa3_cfg_entry *cfg = sa3_cfg_find((sa3_mma_class)p->cfg_class, w.dp, p->pv_mode);
    if (cfg == nullptr) { /* supports() declined these; a launch without it is a caller bug */
        snprintf(err, err_len, "no mma configuration for class %d, DP=%d, pv mode %d", p->cfg_class, w.dp,
                 (int)p->pv_mode);
        return SA3_ERR_UNSUPPORTED;
    }
    sa3_device_guard guard;
    SA3_CUDA_TRY(guard.enter(p->device), "cudaSetDevice");
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    sa3_status s = sa3_quant_kv_launch(p, &w, stream, err, err_len);
    if (s != SA3_OK) return s;
    return cfg->launch[p->dtype == SA3_DTYPE_BF16 ? 1 : 0](p, &w, stream, err, err_len);
}
