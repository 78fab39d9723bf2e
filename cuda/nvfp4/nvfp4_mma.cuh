/* nvfp4_mma.cuh - the one block-scaled FP4 MMA of the nvfp4 family and its register layout.
 *
 * D(16x8, f32) += A(16x64, e2m1) * B(64x8, e2m1), each element of A scaled by the ue4m3 scale of
 * its row and 16-wide K group, each element of B by that of its column and K group:
 *   D[r][c] += sum_{i<4} (sa[r][i] * sb[c][i]) * sum_{k in 16i..16i+15} a[r][k] * b[k][c]
 * On sm_120a this is PTX `mma.sync.aligned.m16n8k64.row.col.kind::mxf4nvf4.block_scale.
 * scale_vec::4X.f32.e2m1.e2m1.f32.ue4m3` (SASS OMMA.SF.16864.F32.E2M1.E2M1.UE4M3.4X) with all
 * four scale selectors 0. Everywhere else (the sm_90a build that runs on Hopper) an emulation
 * takes the same registers and computes the same product exactly (below).
 *
 * Register layout (PTX ISA, "Matrix fragments for mma.m16n8k64" with .e2m1, and the
 * block-scaling figures for .scale_vec::4X; a 32-bit register holds 8 e2m1 values, the one
 * for the smaller k in the lower nibble). Lane l: g = l / 4, t = l % 4.
 *   a[0]: A row g,   k = 8t .. 8t+7        a[1]: A row g+8, k = 8t .. 8t+7
 *   a[2]: A row g,   k = 32+8t .. 32+8t+7  a[3]: A row g+8, k = 32+8t .. 32+8t+7
 *   b[0]: B col g,   k = 8t .. 8t+7        b[1]: B col g,   k = 32+8t .. 32+8t+7
 *   d[0], d[1]: D row g, cols 2t, 2t+1     d[2], d[3]: D row g+8, cols 2t, 2t+1
 *   sfa (thread-id-a 0, byte-id-a 0): the lane with t == 0 holds row g's four scales, the lane
 *        with t == 1 row g+8's (byte i = K group i); lanes t = 2, 3 are not read.
 *   sfb (thread-id-b 0, byte-id-b 0): the lane with t == 0 holds column g's four scales.
 * So in memory a row of A (or a column of B) is plain row-major nibbles: word w of a 64-wide
 * K chunk holds k = 8w .. 8w+7, and lane t loads words t and t + 4.
 *
 * The emulation is exact: products of e2m1 values are multiples of 1/4, a 16-term group sum
 * is an exact integer multiple of 1/4 (|sum| <= 16 * 36), the product of two ue4m3 scales is
 * exact in fp32 (4 + 4 significant bits) and so is its product with the group sum (<= 16
 * bits). The four group terms are added to d in group order, in fp32: exactly the order and
 * rounding of the C reference (csrc/sa3_reference.c, NVFP4), which adds the groups of a dot
 * product in order. The hardware's internal accumulation order and precision are not
 * documented; differences there are what the self-test on first use would see.
 */
#pragma once

#include <cuda_fp8.h>
#include <stdint.h>

#if defined(__CUDA_ARCH_FEAT_SM120_ALL) || defined(__CUDA_ARCH_FEAT_SM121_ALL)
#define SA3_NVFP4_NATIVE 1
#else
#define SA3_NVFP4_NATIVE 0
#endif

/* Eight e2m1 codes (one register) as two words of four signed bytes holding 2*value (exact
 * integers in -12..12): lo gets the codes of the even k, hi the odd ones, both in k order. */
__device__ __forceinline__ void sa3_e2m1x8_to_i8(uint32_t w, int &lo, int &hi) {
    /* magnitude index -> 2*|value|: 0 1 2 3 4 6 8 12 */
    const uint32_t lut_lo = 0x03020100u, lut_hi = 0x0C080604u;
    uint32_t n[2] = {w & 0x0F0F0F0Fu, (w >> 4) & 0x0F0F0F0Fu};
    int out[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        uint32_t m = n[h] & 0x07070707u;
        uint32_t sel = (m & 0x7u) | ((m >> 4) & 0x70u) | ((m >> 8) & 0x700u) | ((m >> 12) & 0x7000u);
        uint32_t mag = __byte_perm(lut_lo, lut_hi, sel);
        uint32_t neg = __vcmpne4(n[h] & 0x08080808u, 0u); /* 0xFF in each negative byte */
        out[h] = (int)__vsub4(mag ^ neg, neg);
    }
    lo = out[0];
    hi = out[1];
}

/* ue4m3 byte i of a scale word as fp32 (exact). */
__device__ __forceinline__ float sa3_ue4m3_byte(uint32_t word, int i) {
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)((word >> (8 * i)) & 0x7Fu), __NV_E4M3);
    return __half2float(__half(h));
}

/* The emulation, on any arch (the sm_120a build also has it, for the layout test). */
__device__ __forceinline__ void sa3_fp4_mma_emulated(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                     uint32_t sfa, uint32_t sfb) {
    const int lane = threadIdx.x & 31, quad = lane & ~3, t = lane & 3;
    /* rows g and g+8 of A, words 0..7 (k = 8w .. 8w+7), from the four lanes of this quad */
    int ar[2][8][2];
#pragma unroll
    for (int s = 0; s < 4; ++s) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            uint32_t w0 = __shfl_sync(0xffffffffu, a[r], quad + s);
            uint32_t w1 = __shfl_sync(0xffffffffu, a[2 + r], quad + s);
            sa3_e2m1x8_to_i8(w0, ar[r][s][0], ar[r][s][1]);
            sa3_e2m1x8_to_i8(w1, ar[r][4 + s][0], ar[r][4 + s][1]);
        }
    }
    const uint32_t sa[2] = {__shfl_sync(0xffffffffu, sfa, quad), __shfl_sync(0xffffffffu, sfa, quad + 1)};
#pragma unroll
    for (int c = 0; c < 2; ++c) {
        /* column 2t + c of B lives in quad 2t + c */
        const int src = 4 * (2 * t + c);
        int bc[8][2];
#pragma unroll
        for (int s = 0; s < 4; ++s) {
            uint32_t w0 = __shfl_sync(0xffffffffu, b[0], src + s);
            uint32_t w1 = __shfl_sync(0xffffffffu, b[1], src + s);
            sa3_e2m1x8_to_i8(w0, bc[s][0], bc[s][1]);
            sa3_e2m1x8_to_i8(w1, bc[4 + s][0], bc[4 + s][1]);
        }
        const uint32_t sb = __shfl_sync(0xffffffffu, sfb, src);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float acc = d[2 * r + c];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                int s4 = 0; /* 4 * sum of a*b over the group: exact */
#pragma unroll
                for (int w = 2 * i; w < 2 * i + 2; ++w) {
                    s4 = __dp4a(ar[r][w][0], bc[w][0], s4);
                    s4 = __dp4a(ar[r][w][1], bc[w][1], s4);
                }
                const float scale = __fmul_rn(sa3_ue4m3_byte(sa[r], i), sa3_ue4m3_byte(sb, i));
                acc = __fadd_rn(acc, __fmul_rn(scale, __fmul_rn((float)s4, 0.25f)));
            }
            d[2 * r + c] = acc;
        }
    }
}

/* d += A * B, block-scaled (layout above). */
__device__ __forceinline__ void sa3_fp4_mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                            uint32_t sfa, uint32_t sfb) {
#if SA3_NVFP4_NATIVE
    const uint16_t zero = 0;
    asm volatile(
        "mma.sync.aligned.m16n8k64.row.col.kind::mxf4nvf4.block_scale.scale_vec::4X.f32.e2m1.e2m1.f32.ue4m3 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3}, {%10}, {%11,%12}, {%13}, {%14,%15};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(sfa), "h"(zero), "h"(zero),
          "r"(sfb), "h"(zero), "h"(zero));
#else
    sa3_fp4_mma_emulated(d, a, b, sfa, sfb);
#endif
}
