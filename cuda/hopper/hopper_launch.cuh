/* hopper_launch.cuh - entries shared between the hopper family's .cu files. Internal to
 * cuda/hopper/. */
#pragma once

#include "sa3_cuda_common.cuh"
#include "hopper_workspace.cuh"

namespace sa3h {

/* Launch `kernel` on `stream` with one launch attribute. */
template <typename... Params, typename... Args>
cudaError_t launch_with(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                        cudaLaunchAttribute attr, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

/* Launch `kernel` on `stream` allowed to overlap the previous kernel's tail (programmatic stream
 * serialization); the kernel calls grid_dep_wait() before reading that kernel's results. */
template <typename... Params, typename... Args>
cudaError_t launch_overlapping(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                               Args... args) {
    cudaLaunchAttribute attr = {};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    return launch_with(kernel, grid, block, smem, stream, attr, args...);
}

/* Launch `kernel` on `stream` in thread block clusters of `cluster` CTAs along x (grid.x a
 * multiple of it). An ordinary launch otherwise: it starts after the previous kernel ends. */
template <typename... Params, typename... Args>
cudaError_t launch_clustered(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, int cluster,
                             cudaStream_t stream, Args... args) {
    cudaLaunchAttribute attr = {};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = (unsigned)cluster;
    attr.val.clusterDim.y = 1;
    attr.val.clusterDim.z = 1;
    return launch_with(kernel, grid, block, smem, stream, attr, args...);
}

/* Enqueue the K/V pre-pass of p into w on `stream`: one launch (hopper_quant.cu). */
sa3_status quant_launch(const sa3_problem *p, const Workspace *w, int smooth_k, int sm_count, cudaStream_t stream,
                        char *err, size_t err_len);

/* Dynamic shared memory the attention kernel asks for at this head dim. */
int attention_smem_bytes(int64_t head_dim);

/* The whole call: pre-pass, then attention (hopper_attn.cu). */
sa3_status attention_launch(const sa3_problem *p, const sa3_options *opt, const sa3_launch_ctx *ctx, char *err,
                            size_t err_len);

} // namespace sa3h
