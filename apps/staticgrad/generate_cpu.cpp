// `staticgrad generate|chat --device cpu` (make_decoder.hpp): the Eigen
// kv_decoder, compiled here rather than in cmd_generate.cpp.
#include "make_decoder.hpp"
#include "staticgrad/infer/kv_decoder.hpp"

namespace staticgrad::cli {

std::unique_ptr<infer::decoder> make_cpu_decoder(const std::filesystem::path& model_dir,
                                                 const std::filesystem::path& adapter_dir) {
  return std::make_unique<infer::kv_decoder>(infer::kv_decoder::load(model_dir, adapter_dir));
}

}  // namespace staticgrad::cli
