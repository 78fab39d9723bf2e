/* quant_kv.cuh - internal entry of quant_kv.cu for attn_mma.cu. */
#pragma once
#include "mma_workspace.cuh"

/* Enqueue the K (and, for FP8 PV, V) quantization of p's K/V into w on `stream`. */
sa3_status sa3_quant_kv_launch(const sa3_attn_params *p, const sa3_mma_ws *w, cudaStream_t stream, char *err,
                               size_t err_len);
