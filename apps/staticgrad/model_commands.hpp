#pragma once
// The commands that run the CPU model (`loss`, `logits`, and the CPU backend
// of `finetune`), declared once and instantiated per compiled block shape in
// generated translation units (apps/CMakeLists.txt writes model_shape_<S>.cpp
// and cpu_backend_<S>.cpp for every entry of STATICGRAD_CPU_SHAPES; the model
// itself is compiled once per shape in staticgrad_cpu_models, src/cpu). The
// definitions are in model_commands_impl.hpp and cpu_backend_impl.hpp;
// dispatch_model_command() picks the shape.
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/models/qwen2.hpp"
#include "staticgrad/train/adamw.hpp"
#include "staticgrad/train/backend.hpp"

namespace staticgrad::cli {

enum class model_job { loss, logits };

struct model_request {
  model_job what = model_job::loss;
  std::string model, data, adapter, grads_out, out;
  std::string tokenizer;  // empty: io::resolve_tokenizer (the model's, else the vendored one)
};

template <class S>
int run_model_command(const model_request& r);

template <class S>
std::unique_ptr<train::backend> make_cpu_backend(const std::string& model_dir, const io::lora_config& lora,
                                                 const train::adamw_options& optim, const train::memory_request& mem);

template <class S, class... Shapes>
constexpr bool in_shape_list(models::shape_list<Shapes...>) {
  return (std::is_same_v<S, Shapes> || ...);
}

// The number of generated shape TUs (CMake passes it): every shape of
// models::all_shapes must have one, or a call above would not link.
#ifdef STATICGRAD_CPU_SHAPE_COUNT
static_assert(STATICGRAD_CPU_SHAPE_COUNT == models::shape_count(models::all_shapes{}),
              "apps/CMakeLists.txt: STATICGRAD_CPU_SHAPES must list every shape of models::all_shapes "
              "(include/staticgrad/models/qwen2_shapes.hpp), one generated translation unit each");
#endif

}  // namespace staticgrad::cli
