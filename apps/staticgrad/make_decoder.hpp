#pragma once
// The decoders of `staticgrad generate|chat`, behind the abstract
// infer::decoder, each built in its own translation unit: the CPU kv_decoder
// (Eigen) in generate_cpu.cpp, so cmd_generate.cpp does not compile it; the
// CUDA decoder (include/staticgrad/infer/cuda_decoder.hpp) in
// generate_cuda_host.cpp + generate_cuda.cu when STATICGRAD_CUDA is ON,
// generate_nocuda.cpp otherwise.
#include <filesystem>
#include <memory>

#include "staticgrad/infer/decoder.hpp"

namespace staticgrad::cli {

// The CPU decoder (kv_decoder.hpp) of `model_dir` (+ adapter, empty: none).
std::unique_ptr<infer::decoder> make_cpu_decoder(const std::filesystem::path& model_dir,
                                                 const std::filesystem::path& adapter_dir);

// The CUDA decoder of `model_dir` (+ the unmerged adapter of `adapter_dir`,
// empty: none). Throws staticgrad::error: a build without CUDA, no device,
// not enough device memory, or the checkpoint's own errors.
std::unique_ptr<infer::decoder> make_cuda_decoder(const std::filesystem::path& model_dir,
                                                  const std::filesystem::path& adapter_dir);

}  // namespace staticgrad::cli
