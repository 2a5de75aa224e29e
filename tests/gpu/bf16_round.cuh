#pragma once
// bf16_round: the host-side rounding the GPU tests apply to their float
// references and inputs, so that both sides see the values the device holds
// (round to nearest even, as __float2bfloat16 does on the device).
#include <cuda_bf16.h>

namespace sg_gpu_test {
inline float bf16_round(float x) { return __bfloat162float(__float2bfloat16(x)); }
}  // namespace sg_gpu_test
