/* mma_family.cu - the mma family's descriptor (sa3_family.h): what it serves, the workspace it
 * needs, and the launch that turns a validated sa3_problem into the kernels' sa3_attn_params. */
#include <stdio.h>

#include "mma_family.cuh"
#include "mma_workspace.cuh"
#include "sa3_build_config.h" /* written by setup.py: SA3_FAMILY_ARCHS_mma, SA3_FAMILY_TARGETS_mma */
#include "sa3_family.h"

namespace {

/* Launch grids: attention (Sq / BQ, Hq, B), quantization (B * Hkv, chunks or 256-key blocks). */
constexpr int64_t kMaxGridYZ = 65535;

/* The configurations a device gets (mma_configs.h): LARGE where every LARGE row fits one block
 * (sm_80 163 KB, sm_90 227 KB), else SMALL (the 99 KB GeForce cards, and an H100/H200 under
 * consumer limits, whose facts say 99 KB). Decided from the shared-memory limit alone, so an
 * arch this file never heard of (a PTX-JIT'd sm_100+) gets whatever fits it. SM count: not used
 * yet (grids are Sq/BQ x Hq x B; no split-KV). */
sa3_mma_class sa3_mma_class_of(const sa3_device_facts *dev) {
    return sa3_mma_class_smem_max(SA3_MMA_LARGE) + SA3_MMA_STATIC_SMEM <= dev->smem_optin ? SA3_MMA_LARGE
                                                                                          : SA3_MMA_SMALL;
}

const char *mma_supports(const sa3_problem *p, const sa3_options *opt, const sa3_device_facts *dev, char *detail,
                         size_t detail_len) {
    const char *why = sa3_problem_common_supports(p, detail, detail_len);
    if (why != NULL) return why;
    if (p->head_dim < 32 || p->head_dim > 256 || p->head_dim % 8 != 0) {
        snprintf(detail, detail_len, "head dim %lld: the mma kernels take multiples of 8 in 32..256",
                 (long long)p->head_dim);
        return "head_dim";
    }
    if (sa3_pv_is_fp8(opt->pv_mode) && dev->sm_arch < 89) {
        snprintf(detail, detail_len, "FP8 P.V needs sm_89 or newer, this is sm_%d", dev->sm_arch);
        return "pv_mode";
    }
    const int64_t skp = sa3_round_up(p->seq_k, 64);
    if (p->seq_q > INT32_MAX || p->seq_k > INT32_MAX || sa3_ceil_div(p->seq_k, SA3_KV_CHUNK) > kMaxGridYZ ||
        sa3_ceil_div(skp, 256) > kMaxGridYZ) {
        snprintf(detail, detail_len, "Sq=%lld, Sk=%lld: the mma grids take at most %lld keys", (long long)p->seq_q,
                 (long long)p->seq_k, (long long)(kMaxGridYZ * 256));
        return "seq_len";
    }
    if (p->heads_q > kMaxGridYZ || p->batch > kMaxGridYZ || p->batch * p->heads_kv > INT32_MAX) {
        snprintf(detail, detail_len, "B=%lld, Hq=%lld, Hkv=%lld exceed the launch grid (65535 each)",
                 (long long)p->batch, (long long)p->heads_q, (long long)p->heads_kv);
        return "grid";
    }
    /* Workspace sizes are size_t products of B*Hkv, padded Sk and padded D: keep them far from
     * overflow (stride-0 views can describe calls far larger than any memory). */
    const double ws = (double)p->batch * (double)p->heads_kv * ((double)skp + SA3_KV_CHUNK) * 256.0 * 8.0;
    if (ws > 4.6e18) {
        snprintf(detail, detail_len, "B=%lld, Hkv=%lld, Sk=%lld: the workspace would exceed 2^62 bytes",
                 (long long)p->batch, (long long)p->heads_kv, (long long)p->seq_k);
        return "workspace";
    }
    const sa3_mma_class cls = sa3_mma_class_of(dev);
    if (opt->pv_mode == SA3_PV_FP8_F16ACC && sa3_mma_smem_bytes(p->head_dim, SA3_PV_FP8_F16ACC, cls) < 0 &&
        sa3_mma_smem_bytes(p->head_dim, SA3_PV_FP8, cls) >= 0) {
        /* mma_configs.h has no fp16-accumulate row here (it would spill); the policy's next
         * entry for pv="auto" is the fp32-accumulate form, which has one */
        snprintf(detail, detail_len,
                 "head dim %lld: fp16-accumulated FP8 P.V has no configuration for %s GPUs (it spills there); "
                 "pv='fp8' serves it",
                 (long long)p->head_dim, cls == SA3_MMA_SMALL ? "99 KB-per-block" : "these");
        return "pv_mode";
    }
    const int smem = sa3_mma_smem_bytes(p->head_dim, opt->pv_mode, cls);
    if (smem < 0) {
        const int big = sa3_mma_smem_bytes(p->head_dim, opt->pv_mode, SA3_MMA_LARGE);
        snprintf(detail, detail_len,
                 "head dim %lld with %s P.V: no configuration fits %d bytes of shared memory per block (sm_%d; the "
                 "large-memory one takes %d)%s",
                 (long long)p->head_dim, sa3_pv_is_fp8(opt->pv_mode) ? "FP8" : "16-bit", dev->smem_optin,
                 dev->sm_arch, big + SA3_MMA_STATIC_SMEM,
                 sa3_pv_is_fp8(opt->pv_mode) || dev->sm_arch < 89 ? "" : "; pv='fp8' serves it there");
        return "smem_limit";
    }
    if (smem + SA3_MMA_STATIC_SMEM > dev->smem_optin) { /* a device below even the SMALL rows */
        snprintf(detail, detail_len, "head dim %lld with %s P.V needs %d bytes of shared memory per block, sm_%d allows %d",
                 (long long)p->head_dim, sa3_pv_is_fp8(opt->pv_mode) ? "FP8" : "16-bit", smem + SA3_MMA_STATIC_SMEM,
                 dev->sm_arch, dev->smem_optin);
        return "smem_limit";
    }
    return NULL;
}

size_t mma_workspace_bytes(const sa3_problem *p, const sa3_options *opt) {
    return sa3_mma_ws_layout(nullptr, p->batch, p->heads_kv, p->seq_k, p->head_dim, sa3_pv_is_fp8(opt->pv_mode)).bytes;
}

sa3_status mma_launch(const sa3_problem *p, const sa3_options *opt, const sa3_launch_ctx *ctx, char *err,
                      size_t err_len) {
    sa3_attn_params a;
    a.q = p->q;
    a.k = p->k;
    a.v = p->v;
    a.o = p->o;
    a.lse = p->lse; /* written by the attention kernel's epilogue when set */
    a.lse_stride_b = p->lse_stride_b, a.lse_stride_h = p->lse_stride_h;
    a.q_stride_b = p->q_stride[0], a.q_stride_h = p->q_stride[1], a.q_stride_s = p->q_stride[2];
    a.k_stride_b = p->k_stride[0], a.k_stride_h = p->k_stride[1], a.k_stride_s = p->k_stride[2];
    a.v_stride_b = p->v_stride[0], a.v_stride_h = p->v_stride[1], a.v_stride_s = p->v_stride[2];
    a.o_stride_b = p->o_stride[0], a.o_stride_h = p->o_stride[1], a.o_stride_s = p->o_stride[2];
    a.batch = p->batch;
    a.heads_q = p->heads_q;
    a.heads_kv = p->heads_kv;
    a.seq_q = p->seq_q;
    a.seq_k = p->seq_k;
    a.head_dim = p->head_dim;
    a.dtype = p->dtype;
    a.sm_scale = p->scale;
    a.is_causal = p->is_causal;
    a.pv_mode = opt->pv_mode;
    a.smooth_k = opt->smooth_k;
    a.workspace = ctx->workspace;
    a.workspace_bytes = ctx->workspace_bytes;
    a.device = p->device;
    a.sm_arch = ctx->device.sm_arch;
    a.cfg_class = sa3_mma_class_of(&ctx->device);
    a.smem_carveout = ctx->device.smem_carveout;
    return sa3_mma_run(&a, ctx->stream, err, err_len);
}

void mma_describe(const sa3_problem *p, const sa3_options *opt, const sa3_device_facts *dev, char *out,
                  size_t out_len) {
    sa3_mma_describe(p->head_dim, opt->pv_mode, sa3_mma_class_of(dev), dev->smem_per_sm, out, out_len);
}

const int mma_targets[] = {SA3_FAMILY_TARGETS_mma};

} // namespace

extern "C" const sa3_family sa3_family_mma = {
    "mma", SA3_FAMILY_ARCHS_mma, mma_targets, (int)(sizeof mma_targets / sizeof mma_targets[0]),
    mma_supports, mma_workspace_bytes, mma_launch, mma_describe,
};
