/* nvfp4_mma_test.cu - test-only: the FP4 MMA on packed fragments, for the layout test
 * (tests/test_gpu_nvfp4.py) through the family's test hook. Never on the hot path.
 *
 * n problems, one warp each, in device memory:
 *   A  [n][16][32] bytes  row-major e2m1 nibbles (byte k/2 of a row, lower nibble = even k)
 *   SA [n][16][4]  bytes  ue4m3 scale of row r, K group i
 *   B  [n][8][32]  bytes  column-major: column c's 64 k, as A's rows
 *   SB [n][8][4]   bytes
 *   C  [n][16][8]  f32 in;  D [n][16][8] f32 out (emulated);  DN [n][16][8] native (sm_120a
 *   build running on sm_120 only; else untouched)
 * Each warp loads its fragments by the layout in nvfp4_mma.cuh, so a wrong mapping there
 * shows up as a mismatch against the plain matrix product the test computes. */
#include "nvfp4_launch.cuh"
#include "nvfp4_mma.cuh"

namespace {

__global__ void nvfp4_mma_test_kernel(int n, const uint8_t *A, const uint8_t *SA, const uint8_t *B, const uint8_t *SB,
                                      const float *C, float *D, float *DN) {
    const int prob = blockIdx.x;
    if (prob >= n) return;
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    const uint32_t *a32 = reinterpret_cast<const uint32_t *>(A + (int64_t)prob * 512);
    const uint32_t *b32 = reinterpret_cast<const uint32_t *>(B + (int64_t)prob * 256);
    const uint32_t *sa32 = reinterpret_cast<const uint32_t *>(SA + (int64_t)prob * 64);
    const uint32_t *sb32 = reinterpret_cast<const uint32_t *>(SB + (int64_t)prob * 32);
    const uint32_t a[4] = {a32[g * 8 + t], a32[(g + 8) * 8 + t], a32[g * 8 + 4 + t], a32[(g + 8) * 8 + 4 + t]};
    const uint32_t b[2] = {b32[g * 8 + t], b32[g * 8 + 4 + t]};
    const uint32_t sfa = sa32[(t & 1) ? g + 8 : g];
    const uint32_t sfb = sb32[g];
    const float *c = C + (int64_t)prob * 128;
    const int idx[4] = {g * 8 + 2 * t, g * 8 + 2 * t + 1, (g + 8) * 8 + 2 * t, (g + 8) * 8 + 2 * t + 1};
    float d[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) d[e] = c[idx[e]];
    sa3_fp4_mma_emulated(d, a, b, sfa, sfb);
#pragma unroll
    for (int e = 0; e < 4; ++e) D[(int64_t)prob * 128 + idx[e]] = d[e];
#if SA3_NVFP4_NATIVE
    if (DN != nullptr) {
#pragma unroll
        for (int e = 0; e < 4; ++e) d[e] = c[idx[e]];
        sa3_fp4_mma(d, a, b, sfa, sfb);
#pragma unroll
        for (int e = 0; e < 4; ++e) DN[(int64_t)prob * 128 + idx[e]] = d[e];
    }
#endif
}

} // namespace

/* args: n, A, SA, B, SB, C, D, DN (0 = none); out[0] = the binary version (10*major+minor of
 * the cubin the driver picked) so the test knows whether DN was written natively. */
sa3_status sa3_nvfp4_mma_test(const int64_t *args, int nargs, int64_t *out, int nout, void *stream, char *err,
                              size_t err_len) {
    if (nargs != 8 || nout < 1) {
        snprintf(err, err_len, "mma test: takes 8 arguments (n, A, SA, B, SB, C, D, DN) and 1 output");
        return SA3_ERR_VALUE;
    }
    cudaFuncAttributes attr;
    SA3_CUDA_TRY(cudaFuncGetAttributes(&attr, nvfp4_mma_test_kernel), "nvfp4 mma test attributes");
    out[0] = attr.binaryVersion;
    const int n = (int)args[0];
    if (n <= 0) return SA3_OK;
    nvfp4_mma_test_kernel<<<n, 32, 0, static_cast<cudaStream_t>(stream)>>>(
        n, reinterpret_cast<const uint8_t *>(args[1]), reinterpret_cast<const uint8_t *>(args[2]),
        reinterpret_cast<const uint8_t *>(args[3]), reinterpret_cast<const uint8_t *>(args[4]),
        reinterpret_cast<const float *>(args[5]), reinterpret_cast<float *>(args[6]),
        reinterpret_cast<float *>(args[7]));
    SA3_LAUNCH_CHECK("nvfp4 mma test kernel");
    return SA3_OK;
}
