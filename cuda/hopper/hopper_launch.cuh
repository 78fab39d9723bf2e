/* hopper_launch.cuh - entries shared between the hopper family's .cu files. Internal to
 * cuda/hopper/. */
#pragma once

#include "sa3_cuda_common.cuh"
#include "hopper_workspace.cuh"

namespace sa3h {

/* Enqueue the K/V pre-pass of p into w on `stream` (hopper_quant.cu). */
sa3_status quant_launch(const sa3_attn_params *p, const Workspace *w, cudaStream_t stream, char *err,
                        size_t err_len);

} // namespace sa3h
