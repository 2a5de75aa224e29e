// `staticgrad generate|chat --device cuda`: the device half of the CUDA
// decoder (include/staticgrad/infer/cuda_decoder_core.cuh), compiled by nvcc;
// generate_cuda_host.cpp is the host half (g++: checkpoints, JSON).
#include "staticgrad/infer/cuda_decoder_core.cuh"
