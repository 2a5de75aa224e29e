// `staticgrad generate|chat --device cuda` (make_decoder.hpp): the CUDA
// decoder's host half; its device half is generate_cuda.cu.
#include "make_decoder.hpp"
#include "staticgrad/infer/cuda_decoder.hpp"

namespace staticgrad::cli {

std::unique_ptr<infer::decoder> make_cuda_decoder(const std::filesystem::path& model_dir,
                                                  const std::filesystem::path& adapter_dir) {
  return infer::cuda_decoder::load(model_dir, adapter_dir);
}

}  // namespace staticgrad::cli
