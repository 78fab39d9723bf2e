/* mma_family.cuh - what attn_mma.cu gives the family descriptor (mma_family.cu). Internal to
 * cuda/mma/. */
#pragma once

#include "mma_configs.h"
#include "mma_params.h"

/* Dynamic shared memory of the configuration that serves this head dim and P.V mode on GPU
 * class cls (mma_configs.h), or -1 if that class has none. */
int sa3_mma_smem_bytes(int64_t head_dim, sa3_pv_mode pv_mode, sa3_mma_class cls);

/* One line on that configuration and how many CTAs fit an SM of smem_per_sm bytes. */
void sa3_mma_describe(int64_t head_dim, sa3_pv_mode pv_mode, sa3_mma_class cls, int smem_per_sm, char *out,
                      size_t out_len);

/* The largest dynamic shared memory of any configuration of class cls. */
int sa3_mma_class_smem_max(sa3_mma_class cls);

/* Quantize K (and V), then attention, on `stream` (a cudaStream_t). p was accepted by the
 * family's supports(); p->cfg_class picks the configuration. */
sa3_status sa3_mma_run(const sa3_attn_params *p, void *stream, char *err, size_t err_len);
