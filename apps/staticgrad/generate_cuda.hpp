#pragma once
// `staticgrad generate|chat --device cuda`: the boundary between the CLI's
// host C++ (g++, fmt) and the CUDA decoder (include/staticgrad/infer/
// cuda_decoder.hpp, built in generate_cuda_host.cpp + generate_cuda.cu when
// STATICGRAD_CUDA is ON; generate_nocuda.cpp otherwise). What crosses is the
// abstract infer::decoder.
#include <filesystem>
#include <memory>

#include "staticgrad/infer/decoder.hpp"

namespace staticgrad::cli {

// The CUDA decoder of `model_dir` (+ the unmerged adapter of `adapter_dir`,
// empty: none). Throws staticgrad::error: a build without CUDA, no device,
// not enough device memory, or the checkpoint's own errors.
std::unique_ptr<infer::decoder> make_cuda_decoder(const std::filesystem::path& model_dir,
                                                  const std::filesystem::path& adapter_dir);

}  // namespace staticgrad::cli
