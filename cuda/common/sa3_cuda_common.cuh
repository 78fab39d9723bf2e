/* sa3_cuda_common.cuh - small device helpers and the host-side error plumbing shared by the
 * kernel files. Internal to cuda/: csrc/ never includes it. */
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>

#include <atomic>

#include "sa3_params.h"

/* Map a CUDA error to a status + message. "No kernel image" is UNSUPPORTED (the Python
 * layer falls back), everything else is a runtime error. */
static inline sa3_status sa3_cuda_fail(cudaError_t e, const char *what, char *err, size_t err_len) {
    if (err && err_len) snprintf(err, err_len, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction) return SA3_ERR_UNSUPPORTED;
    return SA3_ERR_CUDA;
}

#define SA3_CUDA_TRY(call, what)                                          \
    do {                                                                  \
        cudaError_t sa3_e_ = (call);                                      \
        if (sa3_e_ != cudaSuccess) return sa3_cuda_fail(sa3_e_, what, err, err_len); \
    } while (0)

/* Lets Kernel use `bytes` of dynamic shared memory on `device`. The limit is a per-device
 * function attribute: set once per kernel (an instance of this template each) and device, not
 * on every call; a race sets it twice, harmlessly. */
template <auto Kernel>
cudaError_t sa3_allow_dynamic_smem(int device, int bytes) {
    static std::atomic<bool> set[64];
    const bool known = device >= 0 && device < 64;
    if (known && set[device].load(std::memory_order_relaxed)) return cudaSuccess;
    const cudaError_t e = cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e == cudaSuccess && known) set[device].store(true, std::memory_order_relaxed);
    return e;
}

/* After a launch: configuration errors show up in cudaGetLastError (no sync needed). */
#define SA3_LAUNCH_CHECK(what) SA3_CUDA_TRY(cudaGetLastError(), what)

/* Switch to the tensors' device for the duration of a launcher and back (launching on a
 * stream of another device than the current one fails). */
struct sa3_device_guard {
    int prev = -1;
    bool switched = false;
    cudaError_t enter(int device) {
        cudaError_t e = cudaGetDevice(&prev);
        if (e != cudaSuccess) return e;
        if (prev != device) {
            e = cudaSetDevice(device);
            switched = (e == cudaSuccess);
        }
        return e;
    }
    ~sa3_device_guard() {
        if (switched) cudaSetDevice(prev);
    }
};

__host__ __device__ static inline int64_t sa3_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ static inline int64_t sa3_round_up(int64_t a, int64_t b) { return sa3_ceil_div(a, b) * b; }

static inline size_t sa3_align256(size_t x) { return (x + 255u) & ~(size_t)255u; }

/* One array of a family's workspace layout: `count` elements of T at offset *off of base (NULL
 * base: sizes only), *off then advanced past it to the next 256-byte boundary. */
template <typename T>
static inline T *sa3_carve(char *base, size_t *off, int64_t count) {
    T *p = base ? reinterpret_cast<T *>(base + *off) : nullptr;
    *off = sa3_align256(*off + (size_t)count * sizeof(T));
    return p;
}

/* The padded head dim a kernel instance works on (columns past D are zeros). */
static inline int sa3_padded_head_dim(int64_t d) { return d <= 64 ? 64 : (d <= 128 ? 128 : 256); }

/* ---- device helpers ---- */
__device__ __forceinline__ uint32_t sa3_smem_addr(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

/* 16-byte async copy global->shared at a 32-bit shared address (callers may precompute it);
 * src_bytes < 16 zero-fills the rest (0 = all zeros). */
__device__ __forceinline__ void sa3_cp_async16_s(uint32_t smem, const void *gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem), "l"(gmem));
}
__device__ __forceinline__ void sa3_cp_async16_s(uint32_t smem, const void *gmem, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes));
}
/* The same from a generic shared pointer. */
__device__ __forceinline__ void sa3_cp_async16(void *smem, const void *gmem, int src_bytes) {
    sa3_cp_async16_s(sa3_smem_addr(smem), gmem, src_bytes);
}
__device__ __forceinline__ void sa3_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void sa3_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* Eight 16-bit elements (one 16-byte load) as floats. */
template <typename T>
__device__ __forceinline__ void sa3_load8(const T *src, float (&x)[8]) {
    uint4 raw = *reinterpret_cast<const uint4 *>(src);
    const T *h = reinterpret_cast<const T *>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] = static_cast<float>(h[i]);
}

/* Two floats as one packed pair of T (bf16 or fp16, round to nearest even), a in the low half. */
template <typename T>
__device__ __forceinline__ uint32_t sa3_pack2(float a, float b);
template <>
__device__ __forceinline__ uint32_t sa3_pack2<__nv_bfloat16>(float a, float b) {
    __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&v);
}
template <>
__device__ __forceinline__ uint32_t sa3_pack2<__half>(float a, float b) {
    __half2 v = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&v);
}

/* Column sums (MAX: column max) of a CTA's per-thread partials: thread (r0, c) holds columns
 * 8c..8c+7 of pass row r0 in part; red is RPP x (DP + 1) shared scratch. Threads < DP write
 * column threadIdx.x to out[threadIdx.x], combining the rows in order (deterministic). Callers
 * put a barrier between two uses of red. */
template <int DP, int RPP, bool MAX>
__device__ __forceinline__ void sa3_reduce_columns(const float (&part)[8], float (*red)[DP + 1], int r0, int c,
                                                   float *out) {
#pragma unroll
    for (int i = 0; i < 8; ++i) red[r0][c * 8 + i] = part[i];
    __syncthreads();
    if (threadIdx.x < DP) {
        float a = 0.f;
        for (int r = 0; r < RPP; ++r) a = MAX ? fmaxf(a, red[r][threadIdx.x]) : a + red[r][threadIdx.x];
        out[threadIdx.x] = a;
    }
}

/* The reference's v_mean_fix for one channel (csrc/sa3_reference.c, step 7): minus the mean over
 * seq_k keys of V's rounding error, given the sum of (code - V * vinv) and the channel's vinv. */
__device__ __forceinline__ float sa3_v_mean_fix(float err_sum, float vinv, int64_t seq_k) {
    return vinv > 0.f ? -(err_sum / vinv) / (float)seq_k : 0.f;
}

/* Column sums across the CTAs of a group, in CTA order. Each CTA of the group has written DP
 * partial sums at parts + (its index) * DP; the one that brings *count (zeroed by an earlier
 * launch) to `expected` returns true, and its threads < DP get in `total` the sum of their
 * column over the nparts CTAs, added in index order, so the bits do not depend on which CTA
 * finished last. Every thread of each CTA calls it (it has barriers). The fence before the
 * count publishes this CTA's partials to whichever CTA turns out last; that one reads them
 * through L2 (ld.cg), past any stale L1 line. */
template <int DP>
__device__ __forceinline__ bool sa3_last_cta_column_sums(const float *parts, int64_t nparts, uint32_t *count,
                                                         uint32_t expected, float &total) {
    __shared__ bool s_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(count, 1u) == expected - 1u;
    __syncthreads();
    if (!s_last) return false;
    __threadfence();
    total = 0.f;
    if (threadIdx.x < DP)
        for (int64_t y = 0; y < nparts; ++y) total += __ldcg(parts + y * DP + threadIdx.x);
    return true;
}

__device__ __forceinline__ float sa3_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
