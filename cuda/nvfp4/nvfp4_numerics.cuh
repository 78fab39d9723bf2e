/* nvfp4_numerics.cuh - NVFP4 quantization of one 16-element group, bit-exact with the C
 * reference (csrc/sa3_reference.c, "NVFP4" block comment, nvfp4_group):
 *   rg   = 1 / (g * 6)                 once per second-level scale g (g > 0)
 *   bs   = e4m3(amax * rg)             the group's block scale (0 when g == 0)
 *   inv  = 1 / (bs * g)                (0 when bs * g == 0: every code is then 0)
 *   code = e2m1(x * inv)
 * Every operation is one IEEE fp32 operation (explicit _rn intrinsics: no FMA contraction,
 * no fast-math), so the CPU computes the same bits. */
#pragma once

#include <cuda_fp8.h>
#include <stdint.h>

#define SA3_NVFP4_SECOND_LEVEL 2688.0f /* 6 * 448: the largest code times the largest scale */

/* fp32 -> e2m1 code (bit 3 sign), round to nearest even, saturating at 6; NaN -> +6 (0x7),
 * as sa3_f32_to_e2m1. */
__device__ __forceinline__ uint32_t sa3_f32_to_e2m1(float x) {
    if (x != x) return 0x7u;
    const uint32_t sign = (__float_as_uint(x) >> 28) & 0x8u;
    const float a = fabsf(x);
    const uint32_t code = (uint32_t)(a > 0.25f) + (uint32_t)(a >= 0.75f) + (uint32_t)(a > 1.25f) +
                          (uint32_t)(a >= 1.75f) + (uint32_t)(a > 2.5f) + (uint32_t)(a >= 3.5f) + (uint32_t)(a > 5.0f);
    return sign | code;
}

/* fp32 -> e4m3 byte, RNE, satfinite (cvt.rn.satfinite.e4m3x2.f32), as sa3_f32_to_e4m3. */
__device__ __forceinline__ uint32_t sa3_f32_to_e4m3(float x) {
    return (uint32_t)__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
}
__device__ __forceinline__ float sa3_e4m3_to_f32(uint32_t code) {
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)code, __NV_E4M3);
    return __half2float(__half(h));
}

/* The e2m1 value of code nibble n (bit 3 the sign, then 2 exponent bits, 1 mantissa bit), built
 * as fp32 bits: exponent e > 0 is (1 + m/2) * 2^(e-1), e == 0 the subnormal m/2. (A lookup table
 * indexed by the code would live in local memory: a 32-byte stack frame.) */
__device__ __forceinline__ float sa3_e2m1_value(uint32_t n) {
    const uint32_t e = (n >> 1) & 3u, m = n & 1u;
    const uint32_t mag = e != 0u ? ((126u + e) << 23) | (m << 22) : m * 0x3F000000u;
    return __uint_as_float(mag | ((n & 8u) << 28));
}

/* rg of a second-level scale g. */
__device__ __forceinline__ float sa3_nvfp4_rg(float g) { return g > 0.0f ? __frcp_rn(__fmul_rn(g, 6.0f)) : 0.0f; }

/* The block scale byte of a group with max |x| amax and the multiplier of its codes. */
__device__ __forceinline__ uint32_t sa3_nvfp4_scale(float amax, float g, float rg, float &inv) {
    const uint32_t bs = g > 0.0f ? sa3_f32_to_e4m3(__fmul_rn(amax, rg)) : 0u;
    const float den = __fmul_rn(sa3_e4m3_to_f32(bs), g);
    inv = den > 0.0f ? __frcp_rn(den) : 0.0f;
    return bs;
}

/* code of x given inv (0 when inv == 0, as the reference writes 0 there). */
__device__ __forceinline__ uint32_t sa3_nvfp4_code(float x, float inv) {
    return inv > 0.0f ? sa3_f32_to_e2m1(__fmul_rn(x, inv)) : 0u;
}

/* The code byte of two values (lo in the lower nibble) given inv. On sm_120a one
 * cvt.rn.satfinite.e2m1x2.f32 (RNE, satfinite: the conversion sa3_f32_to_e2m1 mirrors; the
 * second source goes to the lower nibble); elsewhere the software conversion. The attention
 * kernel's P (>= 0) uses it; x * 0 = 0 encodes as 0, so inv == 0 needs no test there. */
__device__ __forceinline__ uint32_t sa3_nvfp4_code_pair(float lo, float hi, float inv) {
#if defined(__CUDA_ARCH_FEAT_SM120_ALL) || defined(__CUDA_ARCH_FEAT_SM121_ALL)
    uint32_t out;
    asm("{\n.reg .b8 b;\ncvt.rn.satfinite.e2m1x2.f32 b, %1, %2;\ncvt.u32.u8 %0, b;\n}"
        : "=r"(out)
        : "f"(__fmul_rn(hi, inv)), "f"(__fmul_rn(lo, inv)));
    return out;
#else
    return sa3_nvfp4_code(lo, inv) | (sa3_nvfp4_code(hi, inv) << 4);
#endif
}

