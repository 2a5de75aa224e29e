#pragma once
// Host/device annotations shared by code that runs on the CPU backend and in
// CUDA kernels (the per-op functors in ops/ are compiled by both g++ and nvcc).
#if defined(__CUDACC__)
#define SG_HD __host__ __device__ __forceinline__
#define SG_DEVICE __device__ __forceinline__
#else
#define SG_HD inline
#define SG_DEVICE inline
#endif
