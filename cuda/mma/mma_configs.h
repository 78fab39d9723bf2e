/* mma_configs.h - the mma family's kernel configurations: one row per (GPU class, padded head
 * dim, P.V mode). attn_mma.cu instantiates and dispatches from this table, mma_family.cu picks
 * the class from the device facts (sa3_mma_class_of), and tests/test_sass_mma.py reads it to
 * know which kernels each class runs (it checks their registers, stack and shared memory in the
 * sm_89/sm_120a SASS). The measurements behind the rows: cuda/mma/NOTES.md.
 *
 * Classes (shared memory is what separates them; see sa3_mma_class_of):
 *   LARGE  every row fits the block: sm_80 (A100, 163 KB per block), sm_90 (H100/H200, 227 KB)
 *   SMALL  99 KB per block, 100 KB per SM: sm_86 (RTX 30xx), sm_89 (RTX 40xx), sm_120 (RTX 50xx),
 *          and an H100/H200 under consumer limits (SAGEATTN3_CONSUMER_LIMITS)
 * Columns: X(class, DP, pv, MT, QREG, LSUM, WARPS, STAGES, CTAS)
 *   DP     padded head dim (64, 128, 256)
 *   pv     F16 (16-bit P.V), FP8 (e4m3 P.V, fp32 accumulate) or FP8_F16ACC (e4m3 P.V, each KV
 *          tile accumulated in fp16, then fp32: attn_mma.cu sa3_mma_e4m3_f16)
 *   MT     16-row m-tiles per warp; QREG: Q fragments kept in registers; LSUM: row sums of P by
 *          mma (16-bit P.V only); WARPS per CTA; STAGES: K/V tiles in flight
 *   CTAS   CTAs per SM the row is sized for (attn_mma.cu static_asserts it against the class's
 *          shared memory per SM: 228 KB LARGE, as sm_90; 100 KB SMALL)
 * A (class, DP, pv) without a row is not served on that class: supports() says "smem_limit".
 * SMALL has no 16-bit P.V row at DP=256: K + V tiles alone take 96 KB for two stages plus 16 KB
 * of INT8 Q, past 99 KB, and the LARGE row already spills on sm_120a (NOTES.md).
 * FP8_F16ACC: an fp16 partial per tile holds registers the fp32-accumulate form does not need
 * (ptxas keeps the mma results in flight): at DP=128 two m-tiles spill on sm_89/sm_120a and one
 * does not, so SMALL takes one m-tile there; at DP=256 one m-tile already spills, so SMALL has no
 * such row (the numbers and the loop shapes tried: NOTES.md) and supports() sends
 * pv="fp8_f16acc" there to the FP8 row's reason "pv_mode" (pv="auto" then takes pv="fp8":
 * sageattn3/_policy.py). LARGE rows copy the FP8 shapes (sm_90a runs them for tests).
 */
#ifndef SA3_MMA_CONFIGS_H
#define SA3_MMA_CONFIGS_H

typedef enum sa3_mma_class {
    SA3_MMA_LARGE = 0,
    SA3_MMA_SMALL = 1
} sa3_mma_class;

/* Static shared memory a kernel may have on top of its dynamic tiles: ptxas reserves 1 KB per
 * block on sm_90 and newer (cuobjdump -res-usage "SHARED:1024"; 0 on sm_8x). supports() adds it
 * to every row's dynamic bytes; tests/test_sass_mma.py checks no kernel has more. */
#define SA3_MMA_STATIC_SMEM 1024

/* clang-format off */
#define SA3_MMA_CONFIGS(X)                     \
    X(LARGE,  64, F16, 2, 1, 1, 4, 3, 2)       \
    X(LARGE,  64, FP8, 2, 1, 1, 4, 3, 2)       \
    X(LARGE, 128, F16, 2, 0, 1, 4, 3, 2)       \
    X(LARGE, 128, FP8, 2, 0, 1, 4, 3, 2)       \
    X(LARGE, 256, F16, 1, 0, 0, 4, 2, 2)       \
    X(LARGE, 256, FP8, 1, 0, 0, 4, 2, 2)       \
    X(LARGE,  64, FP8_F16ACC, 2, 1, 1, 4, 3, 2) \
    X(LARGE, 128, FP8_F16ACC, 2, 0, 1, 4, 3, 2) \
    X(LARGE, 256, FP8_F16ACC, 1, 0, 0, 4, 2, 2) \
    X(SMALL,  64, F16, 2, 1, 1, 4, 3, 2)       \
    X(SMALL,  64, FP8, 2, 1, 1, 4, 3, 2)       \
    X(SMALL, 128, F16, 1, 0, 1, 8, 3, 1)       \
    X(SMALL, 128, FP8, 2, 0, 1, 4, 2, 2)       \
    X(SMALL, 256, FP8, 1, 0, 0, 8, 2, 1)       \
    X(SMALL,  64, FP8_F16ACC, 2, 1, 1, 4, 3, 2) \
    X(SMALL, 128, FP8_F16ACC, 1, 0, 1, 4, 2, 2)
/* clang-format on */

#endif /* SA3_MMA_CONFIGS_H */
