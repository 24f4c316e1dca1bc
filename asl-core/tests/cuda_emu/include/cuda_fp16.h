// Host stand-in for CUDA's <cuda_fp16.h>, for running asl.cu's kernels under the test
// emulation (emu.h): only what asl.cu uses. Conversions round to nearest, ties to even, as
// __float2half_rn does; NaN stays NaN (quiet).
#pragma once

#include <cstdint>
#include <cstring>

struct __half {
    uint16_t x;
};

inline float __half2float(__half h) {
    const uint32_t sign = (uint32_t)(h.x & 0x8000u) << 16;
    const uint32_t e = (h.x >> 10) & 0x1fu;
    uint32_t m = h.x & 0x3ffu;
    uint32_t f;
    if (e == 0 && m == 0) {
        f = sign;
    } else if (e == 0) {
        // Subnormal: m * 2^-24, normalised.
        int shift = 0;
        while ((m & 0x400u) == 0) {
            m <<= 1;
            shift++;
        }
        f = sign | ((uint32_t)(113 - shift) << 23) | ((m & 0x3ffu) << 13);
    } else if (e == 31) {
        f = sign | 0x7f800000u | (m << 13);
    } else {
        f = sign | ((e + 112) << 23) | (m << 13);
    }
    float r;
    std::memcpy(&r, &f, sizeof r);
    return r;
}

inline __half __float2half_rn(float v) {
    uint32_t x;
    std::memcpy(&x, &v, sizeof x);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t a = x & 0x7fffffffu;
    uint32_t h;
    if (a > 0x7f800000u) {
        h = 0x7e00u | ((a >> 13) & 0x3ffu); // NaN, quiet
    } else if (a >= 0x477ff000u) {
        h = 0x7c00u; // >= 65520 (and infinity): infinity
    } else if (a >= 0x38800000u) {
        // Normal: drop 13 mantissa bits, round to nearest even (a carry may reach the exponent).
        h = (((a >> 23) - 112) << 10) | ((a >> 13) & 0x3ffu);
        const uint32_t rem = a & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) {
            h++;
        }
    } else {
        // Below 2^-14: the subnormal q = round(v * 2^24).
        const uint32_t e = a >> 23;
        if (e < 102) {
            h = 0;
        } else {
            const uint32_t m = (a & 0x7fffffu) | 0x800000u;
            const uint32_t shift = 126 - e;
            h = m >> shift;
            const uint32_t rem = m & ((1u << shift) - 1);
            const uint32_t half = 1u << (shift - 1);
            if (rem > half || (rem == half && (h & 1u))) {
                h++;
            }
        }
    }
    return __half{(uint16_t)(sign | h)};
}
