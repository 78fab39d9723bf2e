/* sa3_numerics.h - scalar conversions exactly as the GPU kernels round.
 *
 * Every conversion here is bit-exact and independent of the host's floating-point
 * rounding mode (except sa3_quant_int8, see below): it works on the IEEE-754 binary32
 * bit pattern with integer arithmetic, so the CPU reference gives the same bits as the
 * PTX instruction it mirrors, on any compiler (GCC, Clang, MSVC) and any FPU setting.
 *
 * Encodings are returned as unsigned integers holding the raw bit pattern of the narrow
 * format (sign in the top bit of the format), and the *_to_f32 functions decode them
 * exactly (every narrow value is representable in fp32). sa3_round_* are the round trips
 * (encode + decode) the reference actually uses.
 *
 * Formats:
 *   e4m3 (OCP "e4m3fn", torch.float8_e4m3fn): 1 sign, 4 exponent (bias 7), 3 mantissa bits.
 *        No infinities; exponent 15 with mantissa 7 (0x7F/0xFF) is NaN, so the largest
 *        finite value is 1.75 * 2^8 = 448. Smallest normal 2^-6, subnormals k * 2^-9.
 *   e2m1 (OCP MX FP4): 1 sign, 2 exponent (bias 1), 1 mantissa bit. Magnitudes
 *        0, 0.5, 1, 1.5, 2, 3, 4, 6 (0.5 is the only subnormal). No inf, no NaN.
 *   bf16: 1 sign, 8 exponent (bias 127), 7 mantissa bits.
 *   f16 (IEEE binary16): 1 sign, 5 exponent (bias 15), 10 mantissa bits, max 65504,
 *        subnormals k * 2^-24, has inf and NaN.
 */
#ifndef SA3_NUMERICS_H
#define SA3_NUMERICS_H

#include <stdint.h>

#define SA3_E4M3_MAX 448.0f
#define SA3_E2M1_MAX 6.0f
#define SA3_INT8_MAX 127.0f

/* fp32 -> e4m3 with round-to-nearest-even; finite values (and +-inf) beyond the range
 * saturate to +-448 (0x7E/0xFE); NaN -> 0x7F (sign kept). Subnormal e4m3 results are
 * rounded exactly (RNE on the 2^-9 grid); magnitudes below 2^-10 become +-0.
 * Mirrors PTX `cvt.rn.satfinite.e4m3x2.f32` (one lane). Note: torch's CPU cast to
 * float8_e4m3fn does NOT saturate (>= 480 gives NaN), so they agree only in range. */
uint8_t sa3_f32_to_e4m3(float x);
/* e4m3 -> fp32, exact; 0x7F/0xFF -> NaN. Mirrors `cvt.rn.f16x2.e4m3x2` (+ f16 -> f32). */
float sa3_e4m3_to_f32(uint8_t code);

/* fp32 -> e2m1 (low 4 bits; bit 3 = sign) with round-to-nearest-even, saturating to
 * +-6 (includes +-inf). Ties: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2,
 * 3.5 -> 4, 5 -> 4; everything >= 5 (exclusive) -> 6.
 * NaN has no e2m1 encoding: we return +6 (0x7). The hardware's result for NaN input is
 * not pinned down by the PTX documentation we have; the reference only sees NaN when
 * the caller's inputs hold NaN. Mirrors PTX `cvt.rn.satfinite.e2m1x2.f32` (one lane). */
uint8_t sa3_f32_to_e2m1(float x);
/* e2m1 (low 4 bits) -> fp32, exact. */
float sa3_e2m1_to_f32(uint8_t code);

/* fp32 -> bf16 round-to-nearest-even; overflow rounds to +-inf as IEEE does; NaN ->
 * quiet NaN (sign kept, payload truncated, quiet bit forced). Subnormals are kept (bf16
 * has fp32's exponent range, so they round like any other value).
 * Mirrors CUDA `__float2bfloat16_rn` (PTX `cvt.rn.bf16.f32`). */
uint16_t sa3_f32_to_bf16(float x);
float sa3_bf16_to_f32(uint16_t h);

/* fp32 -> IEEE binary16 round-to-nearest-even, with fp16 subnormals (RNE on the 2^-24
 * grid), overflow to +-inf (|x| >= 65520 rounds to inf, as IEEE), NaN -> quiet NaN 0x7E00
 * (sign kept). Mirrors CUDA `__float2half_rn` (PTX `cvt.rn.f16.f32`). */
uint16_t sa3_f32_to_f16(float x);
float sa3_f16_to_f32(uint16_t h);

/* float64 -> IEEE binary16, round-to-nearest-even directly from the double (one rounding,
 * never via fp32), same special cases as sa3_f32_to_f16. The reference's fp16 accumulation
 * (mode int8-fp8-f16acc) adds exact float64 sums to an fp16 partial with it. */
uint16_t sa3_f64_to_f16(double x);

/* Round-trips (value after rounding, as fp32). */
float sa3_round_e4m3(float x);
float sa3_round_e2m1(float x);
float sa3_round_bf16(float x);
float sa3_round_f16(float x);
double sa3_round_f16_f64(double x); /* sa3_f64_to_f16, decoded (exact) */

/* INT8 quantization of one already-scaled value: clamp(rint(x), -127, 127).
 * Rounding is nearbyintf() under the C default rounding mode (round-half-to-even; we never
 * change the FP environment), so 0.5 -> 0, 1.5 -> 2, -2.5 -> -2. +-inf saturate; NaN -> 0.
 * Mirrors the kernels' `__float2int_rn` (PTX `cvt.rni.s32.f32`, which also maps NaN to 0)
 * followed by a clamp to the symmetric range [-127, 127] (-128 is never produced). */
int8_t sa3_quant_int8(float x);

#endif /* SA3_NUMERICS_H */
