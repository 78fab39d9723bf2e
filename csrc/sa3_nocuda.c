/* sa3_nocuda.c - stand-ins for cuda/'s launchers in a build without nvcc (setup.py adds
 * this file only then). Every entry says why kernels are missing; Python falls back to SDPA. */
#include <stdio.h>
#include "../cuda/sa3_launch.h"

#ifndef SA3_WHY_NO_CUDA
#define SA3_WHY_NO_CUDA "built without CUDA"
#endif

static sa3_status sa3_no_cuda(char *err, size_t err_len) {
    if (err && err_len) snprintf(err, err_len, "no CUDA kernels in this build: %s", SA3_WHY_NO_CUDA);
    return SA3_ERR_NO_CUDA;
}

sa3_status sa3_cuda_device_facts(int device, int *sm_arch, int *sm_count, int *smem_optin,
                                 char *name, size_t name_len, char *err, size_t err_len) {
    (void)device; (void)sm_arch; (void)sm_count; (void)smem_optin; (void)name; (void)name_len;
    return sa3_no_cuda(err, err_len);
}

int sa3_mma_supports_arch(int sm_arch) {
    (void)sm_arch;
    return 0;
}

size_t sa3_mma_workspace_bytes(int64_t batch, int64_t heads_kv, int64_t seq_k, int64_t head_dim,
                               sa3_pv_mode pv_mode) {
    (void)batch; (void)heads_kv; (void)seq_k; (void)head_dim; (void)pv_mode;
    return 0;
}

sa3_status sa3_mma_attention(const sa3_attn_params *p, void *stream, char *err, size_t err_len) {
    (void)p; (void)stream;
    return sa3_no_cuda(err, err_len);
}
