/* nvfp4_family.cu - the nvfp4 family's descriptor (sa3_family.h): NVFP4 QK^T and P.V with the
 * block-scaled FP4 MMA of sm_120a (RTX 50xx). The sm_90a build runs the same kernels with the
 * MMA emulated (nvfp4_mma.cuh), so everything but the tensor-core instruction is tested on
 * Hopper; NOTES.md says what was verified where. */
#include <stdio.h>
#include <string.h>

#include "nvfp4_launch.cuh"
#include "sa3_build_config.h" /* written by setup.py: SA3_FAMILY_ARCHS_nvfp4, SA3_FAMILY_TARGETS_nvfp4 */
#include "sa3_family.h"

namespace {

constexpr int64_t kMaxGridYZ = 65535;

const char *nvfp4_supports(const sa3_problem *p, const sa3_options *opt, const sa3_device_facts *dev, char *detail,
                           size_t detail_len) {
    (void)opt;
    (void)dev;
    const char *why = sa3_problem_common_supports(p, detail, detail_len);
    if (why != NULL) return why;
    if (p->head_dim < 32 || p->head_dim > 128 || p->head_dim % 8 != 0) {
        snprintf(detail, detail_len, "head dim %lld: the nvfp4 kernels take multiples of 8 in 32..128",
                 (long long)p->head_dim);
        return "head_dim";
    }
    const int64_t tiles = sa3_ceil_div(p->seq_q > p->seq_k ? p->seq_q : p->seq_k, SA3_NVFP4_TILE);
    if (p->seq_q > INT32_MAX || p->seq_k > INT32_MAX || tiles > kMaxGridYZ) {
        snprintf(detail, detail_len, "Sq=%lld, Sk=%lld: the nvfp4 grids take at most %lld tokens", (long long)p->seq_q,
                 (long long)p->seq_k, (long long)(kMaxGridYZ * SA3_NVFP4_TILE));
        return "seq_len";
    }
    if (p->heads_q > kMaxGridYZ || p->batch > kMaxGridYZ ||
        p->batch * p->heads_q + 2 * p->batch * p->heads_kv > INT32_MAX) {
        snprintf(detail, detail_len, "B=%lld, Hq=%lld, Hkv=%lld exceed the launch grid", (long long)p->batch,
                 (long long)p->heads_q, (long long)p->heads_kv);
        return "grid";
    }
    /* the workspace holds ~0.6 bytes per element of q, k and v */
    const double ws = ((double)p->batch * (double)(p->heads_q + 2 * p->heads_kv)) * ((double)tiles + 1.0) *
                      SA3_NVFP4_TILE * 128.0;
    if (ws > 4.6e18) {
        snprintf(detail, detail_len, "B=%lld, Hq=%lld, Hkv=%lld, Sq=%lld, Sk=%lld: the workspace would exceed 2^62 bytes",
                 (long long)p->batch, (long long)p->heads_q, (long long)p->heads_kv, (long long)p->seq_q,
                 (long long)p->seq_k);
        return "workspace";
    }
    return NULL;
}

sa3_nvfp4_ws layout_of(void *base, const sa3_problem *p) {
    return sa3_nvfp4_ws_layout(base, p->batch, p->heads_q, p->heads_kv, p->seq_q, p->seq_k, p->head_dim);
}

size_t nvfp4_workspace_bytes(const sa3_problem *p, const sa3_options *opt) {
    (void)opt;
    return layout_of(nullptr, p).bytes;
}

sa3_status nvfp4_launch(const sa3_problem *p, const sa3_options *opt, const sa3_launch_ctx *ctx, char *err,
                        size_t err_len) {
    sa3_nvfp4_params a;
    a.q = p->q, a.k = p->k, a.v = p->v, a.o = p->o, a.lse = p->lse;
    a.q_stride_b = p->q_stride[0], a.q_stride_h = p->q_stride[1], a.q_stride_s = p->q_stride[2];
    a.k_stride_b = p->k_stride[0], a.k_stride_h = p->k_stride[1], a.k_stride_s = p->k_stride[2];
    a.v_stride_b = p->v_stride[0], a.v_stride_h = p->v_stride[1], a.v_stride_s = p->v_stride[2];
    a.o_stride_b = p->o_stride[0], a.o_stride_h = p->o_stride[1], a.o_stride_s = p->o_stride[2];
    a.lse_stride_b = p->lse_stride_b, a.lse_stride_h = p->lse_stride_h;
    a.batch = p->batch, a.heads_q = p->heads_q, a.heads_kv = p->heads_kv;
    a.seq_q = p->seq_q, a.seq_k = p->seq_k, a.head_dim = p->head_dim;
    a.dtype = p->dtype;
    a.sm_scale = p->scale;
    a.is_causal = p->is_causal;
    a.smooth_k = opt->smooth_k;
    a.smooth_q = 1; /* the family's numerics: reference per_block_mean with q_block 64 */
    const sa3_nvfp4_ws w = layout_of(ctx->workspace, p);
    if (ctx->workspace_bytes < w.bytes) {
        snprintf(err, err_len, "workspace of %zu bytes, need %zu", ctx->workspace_bytes, w.bytes);
        return SA3_ERR_VALUE;
    }
    sa3_device_guard guard;
    SA3_CUDA_TRY(guard.enter(p->device), "cudaSetDevice");
    sa3_status s = sa3_nvfp4_quantize(a, w, ctx->stream, err, err_len);
    if (s != SA3_OK) return s;
    return sa3_nvfp4_attention(a, w, ctx->stream, err, err_len);
}

/* Test hook (tests/test_gpu_nvfp4.py):
 *   "mma":       sa3_nvfp4_mma_test (nvfp4_mma_test.cu)
 *   "ws_layout": args (B, Hq, Hkv, Sq, Sk, D) -> byte offsets of qc, qs, kc, ks, vc, vs, kmean,
 *                gq, gk, gv, qmean in the workspace, then sqp, skp, dp, bytes (15 values). */
sa3_status nvfp4_test(const char *name, const int64_t *args, int nargs, int64_t *out, int nout, void *stream,
                      char *err, size_t err_len) {
    if (strcmp(name, "mma") == 0) return sa3_nvfp4_mma_test(args, nargs, out, nout, stream, err, err_len);
    if (strcmp(name, "ws_layout") == 0) {
        if (nargs != 6 || nout < 15) {
            snprintf(err, err_len, "ws_layout takes (B, Hq, Hkv, Sq, Sk, D) and 15 outputs");
            return SA3_ERR_VALUE;
        }
        char *const base = reinterpret_cast<char *>(256); /* any aligned non-NULL base: offsets = pointer - base */
        const sa3_nvfp4_ws w = sa3_nvfp4_ws_layout(base, args[0], args[1], args[2], args[3], args[4], args[5]);
        const void *ptrs[11] = {w.qc, w.qs, w.kc, w.ks, w.vc, w.vs, w.kmean, w.gq, w.gk, w.gv, w.qmean};
        for (int i = 0; i < 11; ++i) out[i] = (int64_t)(reinterpret_cast<const char *>(ptrs[i]) - base);
        out[11] = w.sqp, out[12] = w.skp, out[13] = w.dp, out[14] = (int64_t)w.bytes;
        return SA3_OK;
    }
    snprintf(err, err_len, "no test named %s (mma, ws_layout)", name);
    return SA3_ERR_VALUE;
}

const int nvfp4_targets[] = {SA3_FAMILY_TARGETS_nvfp4};

} // namespace

extern "C" const sa3_family sa3_family_nvfp4 = {
    "nvfp4", SA3_FAMILY_ARCHS_nvfp4, nvfp4_targets, (int)(sizeof nvfp4_targets / sizeof nvfp4_targets[0]),
    nvfp4_supports, nvfp4_workspace_bytes, nvfp4_launch, nullptr /* describe */, nvfp4_test,
};
