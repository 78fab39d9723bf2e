/* sa3_numerics.c - bit-exact scalar conversions (see sa3_numerics.h for the contract).
 *
 * All narrowing conversions share one routine: a finite fp32 magnitude is rewritten as an
 * integer count of units of the target format's last place, rounded to nearest-even with
 * integer arithmetic. Because the target's codes are monotonic in the magnitude (exponent
 * above mantissa), a rounding carry out of the mantissa correctly bumps the exponent, and
 * the subnormal -> normal boundary needs no special case.
 */
#include "sa3_numerics.h"

#include <math.h>
#include <string.h>

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u); /* the only portable type pun in C */
    return u;
}

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* v / 2^s rounded to nearest, ties to even, for 0 <= s. */
static uint32_t rne_shift(uint32_t v, int s) {
    uint32_t q, rem, half;
    if (s == 0) {
        return v;
    }
    if (s > 31) {
        return 0; /* v < 2^32 <= 2^(s-1): below half a unit (callers never shift this far) */
    }
    q = v >> s;
    rem = v & ((UINT32_C(1) << s) - 1u);
    half = UINT32_C(1) << (s - 1);
    if (rem > half || (rem == half && (q & 1u))) {
        q += 1u;
    }
    return q;
}

/* Code (without sign) of the finite, non-NaN magnitude `abs_bits` in a binary format with
 * `man` mantissa bits and exponent `bias`, rounded to nearest-even, not yet clamped.
 *
 * Normal target range (|x| >= 2^(1-bias)): the code is (biased exponent << man) | top
 * `man` mantissa bits, i.e. (abs_bits >> (23 - man)) minus the exponent-bias difference,
 * rounded on the dropped 23 - man bits.
 * Subnormal target range: the code is the magnitude in units of 2^(1 - bias - man).
 * With m24 the fp32 significand (implicit bit included for normals) and e its biased
 * exponent (1 for fp32 subnormals), |x| = m24 * 2^(e - 150), so the unit count is
 * m24 / 2^(151 - bias - man - e). */
static uint32_t narrow_code(uint32_t abs_bits, int man, int bias) {
    int e = (int)(abs_bits >> 23);
    int min_normal_e = 128 - bias; /* fp32 biased exponent of 2^(1-bias) */
    if (e >= min_normal_e) {
        uint32_t rounded = rne_shift(abs_bits, 23 - man);
        return rounded - ((uint32_t)(127 - bias) << man);
    } else {
        uint32_t m24 = abs_bits & 0x7FFFFFu;
        int s;
        if (e != 0) {
            m24 |= 0x800000u;
        } else {
            e = 1;
        }
        s = 151 - bias - man - e;
        if (s > 24) {
            return 0; /* m24 < 2^24 <= 2^(s-1): below half a unit */
        }
        return rne_shift(m24, s);
    }
}

uint8_t sa3_f32_to_e4m3(float x) {
    uint32_t u = f32_bits(x);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7FFFFFFFu;
    uint32_t code;
    if (a > 0x7F800000u) {
        return (uint8_t)(sign | 0x7Fu); /* NaN stays NaN */
    }
    if (a >= 0x43E00000u) {
        return (uint8_t)(sign | 0x7Eu); /* |x| >= 448 (incl. inf): satfinite */
    }
    code = narrow_code(a, 3, 7);
    if (code > 0x7Eu) {
        code = 0x7Eu; /* (448, 464] rounds to 448 anyway; above would be the NaN code */
    }
    return (uint8_t)(sign | code);
}

float sa3_e4m3_to_f32(uint8_t c) {
    uint32_t sign = (uint32_t)(c & 0x80u) << 24;
    uint32_t e = (c >> 3) & 0xFu;
    uint32_t m = c & 0x7u;
    if (e == 0xFu && m == 0x7u) {
        return bits_f32(sign | 0x7FC00000u);
    }
    if (e == 0) {
        /* subnormal: m * 2^-9, exact in fp32 */
        float v = (float)m * (1.0f / 512.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e - 7u + 127u) << 23) | (m << 20));
}

uint8_t sa3_f32_to_e2m1(float x) {
    uint32_t u = f32_bits(x);
    uint8_t sign = (uint8_t)((u >> 28) & 0x8u);
    uint32_t a = u & 0x7FFFFFFFu;
    uint32_t code;
    if (a > 0x7F800000u) {
        return 0x7u; /* no NaN in e2m1; see header */
    }
    if (a >= 0x40C00000u) {
        return (uint8_t)(sign | 0x7u); /* |x| >= 6 (incl. inf): satfinite */
    }
    code = narrow_code(a, 1, 1);
    if (code > 0x7u) {
        code = 0x7u; /* (5, 6) rounds up past 6: saturate */
    }
    return (uint8_t)(sign | code);
}

float sa3_e2m1_to_f32(uint8_t c) {
    /* magnitudes indexed by the 3 low bits */
    static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    float v = mag[c & 0x7u];
    return (c & 0x8u) ? -v : v;
}

uint16_t sa3_f32_to_bf16(float x) {
    uint32_t u = f32_bits(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
        return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN, sign kept */
    }
    /* RNE on the low 16 bits; a carry into the exponent (up to inf) is the IEEE result.
     * Cannot overflow uint32: the largest finite input is 0x7F7FFFFF. */
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float sa3_bf16_to_f32(uint16_t h) {
    return bits_f32((uint32_t)h << 16);
}

uint16_t sa3_f32_to_f16(float x) {
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    uint32_t code;
    if (a > 0x7F800000u) {
        return (uint16_t)(sign | 0x7E00u);
    }
    if (a >= 0x47800000u) {
        return (uint16_t)(sign | 0x7C00u); /* >= 65536 (incl. inf): inf */
    }
    code = narrow_code(a, 10, 15);
    if (code > 0x7C00u) {
        code = 0x7C00u; /* cannot happen below 65536; kept as a guard */
    }
    return (uint16_t)(sign | code); /* [65520, 65536) rounds to 0x7C00 = inf: IEEE */
}

/* v / 2^s rounded to nearest, ties to even, for 0 <= s <= 63 (64-bit rne_shift). */
static uint64_t rne_shift64(uint64_t v, int s) {
    uint64_t q, rem, half;
    if (s == 0) {
        return v;
    }
    q = v >> s;
    rem = v & ((UINT64_C(1) << s) - 1u);
    half = UINT64_C(1) << (s - 1);
    if (rem > half || (rem == half && (q & 1u))) {
        q += 1u;
    }
    return q;
}

/* As sa3_f32_to_f16, on the binary64 pattern (52 mantissa bits, bias 1023): normal f16 range
 * (|x| >= 2^-14, biased double exponent >= 1009) drops 42 bits; below it the magnitude is
 * counted in units of 2^-24: m53 * 2^(e - 1075) / 2^-24 = m53 / 2^(1051 - e). */
uint16_t sa3_f64_to_f16(double x) {
    uint64_t u, a, code;
    uint16_t sign;
    int e;
    memcpy(&u, &x, sizeof u);
    sign = (uint16_t)((u >> 48) & 0x8000u);
    a = u & UINT64_C(0x7FFFFFFFFFFFFFFF);
    if (a > UINT64_C(0x7FF0000000000000)) {
        return (uint16_t)(sign | 0x7E00u);
    }
    if (a >= UINT64_C(0x40F0000000000000)) {
        return (uint16_t)(sign | 0x7C00u); /* >= 65536 (incl. inf): inf */
    }
    e = (int)(a >> 52);
    if (e >= 1009) {
        code = rne_shift64(a, 42) - ((uint64_t)(1023 - 15) << 10);
    } else {
        uint64_t m53 = a & ((UINT64_C(1) << 52) - 1u);
        int s;
        if (e != 0) {
            m53 |= UINT64_C(1) << 52;
        } else {
            e = 1;
        }
        s = 1051 - e;
        code = s > 53 ? 0 : rne_shift64(m53, s); /* s > 53: below half a unit */
    }
    if (code > 0x7C00u) {
        code = 0x7C00u; /* cannot happen below 65536; kept as a guard */
    }
    return (uint16_t)(sign | (uint16_t)code); /* [65520, 65536) rounds to 0x7C00 = inf: IEEE */
}

float sa3_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu;
    uint32_t m = h & 0x3FFu;
    if (e == 0x1Fu) {
        return bits_f32(sign | 0x7F800000u | (m << 13)); /* inf or NaN */
    }
    if (e == 0) {
        float v = (float)m * (1.0f / 16777216.0f); /* m * 2^-24, exact */
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e - 15u + 127u) << 23) | (m << 13));
}

float sa3_round_e4m3(float x) {
    return sa3_e4m3_to_f32(sa3_f32_to_e4m3(x));
}

float sa3_round_e2m1(float x) {
    return sa3_e2m1_to_f32(sa3_f32_to_e2m1(x));
}

float sa3_round_bf16(float x) {
    return sa3_bf16_to_f32(sa3_f32_to_bf16(x));
}

float sa3_round_f16(float x) {
    return sa3_f16_to_f32(sa3_f32_to_f16(x));
}

double sa3_round_f16_f64(double x) {
    return (double)sa3_f16_to_f32(sa3_f64_to_f16(x));
}

int8_t sa3_quant_int8(float x) {
    float r;
    if (x != x) {
        return 0;
    }
    /* Clamp before converting: a float -> int conversion of an out-of-range value is
     * undefined behaviour in C. */
    if (x >= SA3_INT8_MAX) {
        return 127;
    }
    if (x <= -SA3_INT8_MAX) {
        return -127;
    }
    r = nearbyintf(x);
    return (int8_t)r;
}
