// The token-reduction kernels (token_reduce.cuh) for every small dimension
// token_reduce_plan::make accepts, compiled once for the whole build.
#include "staticgrad/backend/cuda/token_reduce.cuh"

namespace staticgrad::cuda {
STATICGRAD_TOKEN_REDUCE_INSTANTIATE(, 16)
STATICGRAD_TOKEN_REDUCE_INSTANTIATE(, 32)
STATICGRAD_TOKEN_REDUCE_INSTANTIATE(, 48)
STATICGRAD_TOKEN_REDUCE_INSTANTIATE(, 64)
}  // namespace staticgrad::cuda
