// One LoRA fine-tuning step with the library directly: load a Hugging Face
// checkpoint, attach a fresh PEFT-initialised LoRA adapter, compute the loss
// and its gradients on a batch, take an AdamW step, save the adapter.
//
//   example_finetune_step [MODEL_DIR [OUT_DIR]]
// MODEL_DIR defaults to the tiny fixture tests/fixtures/hf/tied_v97_l1_r4_all7
// (any Qwen2 checkpoint of a compiled block shape works). The batch is
// synthetic: two packed sequences of ids below the vocabulary size.
#include <cstdio>
#include <filesystem>
#include <numeric>

#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/models/qwen2_model.hpp"
#include "staticgrad/train/adamw.hpp"
#include "staticgrad/train/lora_init.hpp"

using namespace staticgrad;
namespace fs = std::filesystem;

int main(int argc, char** argv) try {
  const fs::path dir = argc > 1 ? fs::path(argv[1])
                                : fs::path(STATICGRAD_SOURCE_DIR) / "tests/fixtures/hf/tied_v97_l1_r4_all7";
  const fs::path out = argc > 2 ? fs::path(argv[2]) : fs::temp_directory_path() / "staticgrad-example-adapter";
  const auto cfg = io::read_hf_config(dir);
  // The block shape is a compile-time parameter: pick the compiled one that
  // config.json describes.
  return models::dispatch_shape(cfg, (dir / "config.json").string(), [&]<class S>() {
    auto model = models::qwen2_model<S>::load(dir);

    // A fresh adapter: r 8 on the attention projections, A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0.
    io::lora_config lc;
    lc.r = 8;
    lc.lora_alpha = 16;
    lc.target_modules = {io::lora_target::q_proj, io::lora_target::k_proj, io::lora_target::v_proj,
                         io::lora_target::o_proj};
    auto adapter = io::make_lora_adapter(lc, cfg), grads = io::make_lora_adapter(lc, cfg);
    train::init_lora(adapter, cfg, /*seed=*/0);
    model->attach(&adapter, &grads);

    // A batch: two sequences packed into one token stream (attention stays
    // inside each); labels = the ids (the model shifts them).
    std::vector<std::int32_t> ids(48);
    for (std::size_t t = 0; t < ids.size(); ++t) ids[t] = std::int32_t((7 * t + 3) % std::size_t(cfg.vocab_size));
    const auto layout = cpu::make_packed_layout(std::vector<std::int64_t>{20, 28});
    const models::batch_view batch{ids, ids, layout.view()};

    train::adamw_lora opt({.lr = 1e-2, .weight_decay = 0.0});
    const auto before = model->step(batch, /*backward=*/true);  // loss, and its LoRA gradients into `grads`
    const double norm = opt.step(adapter, grads, 1e-2);
    const auto after = model->step(batch, /*backward=*/false);
    std::printf("loss before %.6f, after one AdamW step %.6f (gradient norm %.4f, %lld tokens)\n", before.mean(),
                after.mean(), norm, static_cast<long long>(before.counted));

    io::write_peft_adapter(out, adapter, cfg);  // PEFT layout, atomic files
    std::printf("adapter saved to %s\n", out.string().c_str());
    return after.mean() < before.mean() ? 0 : 1;
  });
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
