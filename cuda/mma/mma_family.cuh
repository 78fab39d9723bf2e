/* mma_family.cuh - what attn_mma.cu gives the family descriptor (mma_family.cu). Internal to
 * cuda/mma/. */
#pragma once

#include "mma_params.h"

/* Dynamic shared memory of the kernel configuration that serves this head dim and P.V mode. */
int sa3_mma_smem_bytes(int64_t head_dim, sa3_pv_mode pv_mode);

/* Quantize K (and V), then attention, on `stream` (a cudaStream_t). p was accepted by the
 * family's supports(). */
sa3_status sa3_mma_run(const sa3_attn_params *p, void *stream, char *err, size_t err_len);
