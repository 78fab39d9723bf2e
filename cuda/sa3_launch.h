/* sa3_launch.h - the extern "C" surface of cuda/: everything csrc/ may call.
 *
 * Launchers validate nothing that csrc/sa3_check.c already validated; they never allocate
 * device memory, never synchronize, and enqueue work on `stream` (a cudaStream_t passed as
 * void*). On failure they return a status and write a one-line reason into err[errlen].
 * In a build without nvcc, csrc/sa3_nocuda.c implements the same functions as stubs.
 */
#ifndef SA3_LAUNCH_H
#define SA3_LAUNCH_H

#include <stddef.h>
#include <stdint.h>
#include "sa3_params.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Device facts (cuda/sa3_device.cu). name gets the marketing name. */
sa3_status sa3_cuda_device_facts(int device, int *sm_arch, int *sm_count, int *smem_optin,
                                 char *name, size_t name_len, char *err, size_t err_len);

/* 1 if the mma kernel family was compiled for a target that runs on `sm_arch`. */
int sa3_mma_supports_arch(int sm_arch);

/* Scratch bytes the mma path needs for K (and V when pv_mode is FP8), 256-byte aligned. */
size_t sa3_mma_workspace_bytes(int64_t batch, int64_t heads_kv, int64_t seq_k, int64_t head_dim,
                               sa3_pv_mode pv_mode);

/* Whole attention call on the mma path: quantize K (and V), then attention.
 * (cuda/quant_kv.cu + cuda/attn_mma.cu) */
sa3_status sa3_mma_attention(const sa3_attn_params *p, void *stream, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif /* SA3_LAUNCH_H */
