/* hopper_family.cu - the hopper family's descriptor (sa3_family.h): which calls the wgmma/TMA
 * kernel serves, the workspace it needs, and the launch. */
#include <stdio.h>

#include "hopper_launch.cuh"
#include "hopper_workspace.cuh"
#include "sa3_build_config.h" /* written by setup.py: SA3_FAMILY_ARCHS_hopper, SA3_FAMILY_TARGETS_hopper */
#include "sa3_family.h"

namespace {

constexpr int64_t kMaxGridYZ = 65535;

const char *hopper_supports(const sa3_problem *p, const sa3_options *opt, const sa3_device_facts *dev, char *detail,
                            size_t detail_len) {
    const char *why = sa3_problem_common_supports(p, detail, detail_len);
    if (why != NULL) return why;
    if (dev->sm_arch != 90) {
        snprintf(detail, detail_len, "wgmma/TMA kernels run on sm_90 only, this is sm_%d", dev->sm_arch);
        return "arch";
    }
    if (p->head_dim > 128 || p->head_dim % 8 != 0) {
        snprintf(detail, detail_len, "head dim %lld: the hopper kernel takes multiples of 8 up to 128 (64 and 128 native)",
                 (long long)p->head_dim);
        return "head_dim";
    }
    if (opt->pv_mode != SA3_PV_FP8) {
        snprintf(detail, detail_len, "the hopper kernel computes P.V in FP8 only");
        return "pv_mode";
    }
    const int64_t nblk = (p->seq_k + sa3h::kBlockN - 1) / sa3h::kBlockN;
    if (p->seq_q > INT32_MAX || p->seq_k > INT32_MAX || nblk > kMaxGridYZ) {
        snprintf(detail, detail_len, "Sq=%lld, Sk=%lld: the hopper grids take at most %lld keys", (long long)p->seq_q,
                 (long long)p->seq_k, (long long)(kMaxGridYZ * sa3h::kBlockN));
        return "seq_len";
    }
    /* the pre-pass grid is 2 clusters of up to 8 CTAs per K/V head, along x */
    if (p->heads_q > kMaxGridYZ || p->batch > kMaxGridYZ || p->batch * p->heads_kv > INT32_MAX / 16) {
        snprintf(detail, detail_len,
                 "B=%lld, Hq=%lld, Hkv=%lld exceed the launch grids (B, Hq <= 65535; B*Hkv <= %d)",
                 (long long)p->batch, (long long)p->heads_q, (long long)p->heads_kv, INT32_MAX / 16);
        return "grid";
    }
    const int smem = sa3h::attention_smem_bytes(p->head_dim);
    if (smem > dev->smem_optin) {
        snprintf(detail, detail_len, "needs %d bytes of shared memory per block, the device allows %d", smem,
                 dev->smem_optin);
        return "smem_limit";
    }
    return NULL;
}

size_t hopper_workspace_bytes(const sa3_problem *p, const sa3_options *) {
    const int64_t h = sa3h::kv_heads_per_pass(p->batch, p->heads_q, p->heads_kv, p->seq_q, p->seq_k, p->head_dim);
    return sa3h::workspace_layout(nullptr, p->batch, h, p->seq_k, p->head_dim).bytes;
}

sa3_status hopper_launch(const sa3_problem *p, const sa3_options *opt, const sa3_launch_ctx *ctx, char *err,
                         size_t err_len) {
    return sa3h::attention_launch(p, opt, ctx, err, err_len);
}

const int hopper_targets[] = {SA3_FAMILY_TARGETS_hopper};

} // namespace

extern "C" const sa3_family sa3_family_hopper = {
    "hopper", SA3_FAMILY_ARCHS_hopper, hopper_targets, (int)(sizeof hopper_targets / sizeof hopper_targets[0]),
    hopper_supports, hopper_workspace_bytes, hopper_launch,
};
