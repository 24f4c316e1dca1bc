// Host stand-in for CUDA's <cuda_bf16.h>, for running asl.cu's kernels under the test
// emulation (emu.h): only what asl.cu uses. Round to nearest, ties to even; NaN stays NaN.
#pragma once

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
    uint16_t x;
};

inline float __bfloat162float(__nv_bfloat16 b) {
    const uint32_t f = (uint32_t)b.x << 16;
    float r;
    std::memcpy(&r, &f, sizeof r);
    return r;
}

inline __nv_bfloat16 __float2bfloat16_rn(float v) {
    uint32_t x;
    std::memcpy(&x, &v, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return __nv_bfloat16{(uint16_t)((x >> 16) | 0x40u)}; // NaN, quiet
    }
    const uint32_t r = x + 0x7fffu + ((x >> 16) & 1u);
    return __nv_bfloat16{(uint16_t)(r >> 16)};
}
