// Host-only (g++) half of tests/gpu/test_model_step.cu: see model_reference.hpp.
#include "model_reference.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/io/safetensors_writer.hpp"
#include "staticgrad/models/qwen2_model.hpp"
#include "staticgrad/train/adamw.hpp"

namespace staticgrad::test {

const char* model_reference_target(int t) {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (auto x : io::all_lora_targets) v.push_back(std::string(io::target_parent(x)) + "." + std::string(io::target_name(x)));
    return v;
  }();
  return t >= 0 && t < static_cast<int>(names.size()) ? names[static_cast<std::size_t>(t)].c_str() : "";
}

namespace {

template <class shape>
int run_shape(const model_reference_args& a, model_reference_out& out) {
  namespace fs = std::filesystem;
  try {
    // The model: config.json + model.safetensors (f32) in a fresh temporary directory.
    const fs::path dir = fs::temp_directory_path() / ("sg_model_ref_" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);
    io::hf_config c;
    c.hidden_size = shape::hidden, c.intermediate_size = shape::intermediate, c.num_hidden_layers = a.layers;
    c.num_attention_heads = shape::heads, c.num_key_value_heads = shape::kv_heads, c.head_dim = shape::head_dim;
    c.vocab_size = a.vocab, c.rope_theta = a.rope_theta, c.rms_norm_eps = a.eps, c.tie_word_embeddings = false;
    io::write_hf_config(dir / "config.json", c);
    std::vector<io::tensor_data> ts;
    for (int i = 0; i < a.n_weights; ++i) {
      const std::size_t n = static_cast<std::size_t>(a.rows[i] ? a.rows[i] : 1) * static_cast<std::size_t>(a.cols[i]);
      io::tensor_data t;
      t.name = a.names[i];
      t.dtype = io::st_dtype::f32;
      t.shape = a.rows[i] ? std::vector<std::int64_t>{a.rows[i], a.cols[i]} : std::vector<std::int64_t>{a.cols[i]};
      t.bytes = std::as_bytes(std::span<const float>(a.data[i], n));
      ts.push_back(std::move(t));
    }
    io::write_safetensors(dir / "model.safetensors", std::move(ts));
    auto model = models::qwen2_model<shape>::load(dir);
    fs::remove_all(dir);

    io::lora_config lc;
    lc.r = a.rank, lc.lora_alpha = a.lora_alpha, lc.lora_dropout = a.lora_dropout;
    lc.target_modules.assign(io::all_lora_targets.begin(), io::all_lora_targets.end());
    auto ad = io::make_lora_adapter(lc, model->config()), grads = io::make_lora_adapter(lc, model->config());
    for (int l = 0; l < a.layers; ++l)
      for (int t = 0; t < 7; ++t) {
        auto& p = ad.at(l, io::all_lora_targets[static_cast<std::size_t>(t)]);
        std::memcpy(p.a.data(), a.A[l * 7 + t], p.a.size() * sizeof(float));
        std::memcpy(p.b.data(), a.B[l * 7 + t], p.b.size() * sizeof(float));
      }
    model->attach(&ad, &grads);
    std::vector<std::int32_t> pos, seq = {0};
    for (int s = 0; s < a.nseq; ++s) {
      for (int i = 0; i < a.seq_lens[s]; ++i) pos.push_back(i);
      seq.push_back(seq.back() + a.seq_lens[s]);
    }
    cpu::token_layout layout{pos, seq};
    models::batch_view b{std::span<const std::int32_t>(a.ids, static_cast<std::size_t>(a.T)),
                         std::span<const std::int32_t>(a.labels, static_cast<std::size_t>(a.T)), layout};
    auto seed_of = [&](int m) { return a.dropout_seeds ? a.dropout_seeds[m] : std::uint64_t{0}; };
    if (a.micro <= 1) {
      const auto res = model->step(b, true, 0.0, seed_of(0));
      out.loss_sum = res.loss_sum, out.counted = res.counted;
    } else {  // micro-batches: the count first (forward only), then each pass seeded with 1 / (micro * counted)
      out.counted = model->step(b, false).counted;
      for (int m = 0; m < a.micro; ++m)
        out.loss_sum += model->step(b, true, 1.0 / (double(a.micro) * double(out.counted)), seed_of(m)).loss_sum;
    }
    for (int l = 0; l < a.layers; ++l)
      for (int t = 0; t < 7; ++t) {
        const auto& g = grads.at(l, io::all_lora_targets[static_cast<std::size_t>(t)]);
        std::memcpy(out.dA[l * 7 + t], g.a.data(), g.a.size() * sizeof(float));
        std::memcpy(out.dB[l * 7 + t], g.b.data(), g.b.size() * sizeof(float));
      }
    train::adamw_options o;
    o.lr = a.lr, o.beta1 = a.beta1, o.beta2 = a.beta2, o.eps = a.adam_eps, o.weight_decay = a.weight_decay;
    o.max_grad_norm = a.max_grad_norm;
    train::adamw_lora opt(o);
    out.grad_norm = opt.step(ad, grads, a.lr);
    for (int l = 0; l < a.layers; ++l)
      for (int t = 0; t < 7; ++t) {
        const auto& p = ad.at(l, io::all_lora_targets[static_cast<std::size_t>(t)]);
        std::memcpy(out.newA[l * 7 + t], p.a.data(), p.a.size() * sizeof(float));
        std::memcpy(out.newB[l * 7 + t], p.b.data(), p.b.size() * sizeof(float));
      }
    out.loss_sum_after = model->step(b, false).loss_sum;  // the model reads the updated adapter
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "model_reference_run: %s\n", e.what());
  }
  return -1;
}

}  // namespace

int model_reference_run(const model_reference_args& a, model_reference_out& out) {
  const std::string s = a.shape ? a.shape : "0.5b";
  if (s == "0.5b") return run_shape<models::qwen2_5_0_5b>(a, out);
  if (s == "3b") return run_shape<models::qwen2_5_3b>(a, out);
  if (s == "7b") return run_shape<models::qwen2_5_7b>(a, out);
  std::fprintf(stderr, "model_reference_run: no reference for shape '%s' (0.5b, 3b, 7b)\n", s.c_str());
  return -1;
}

int adamw_reference_flat(float* p, const float* g, std::int64_t n, double lr, double beta1, double beta2, double eps,
                         double weight_decay, double max_grad_norm) {
  try {
    std::vector<float> gc(g, g + n);
    double ss = 0;
    for (float x : gc) ss += double(x) * double(x);
    const double norm = std::sqrt(ss), coef = max_grad_norm > 0 ? max_grad_norm / (norm + 1e-6) : 1.0;  // clip_grad_norm_
    if (coef < 1.0)
      for (float& x : gc) x *= static_cast<float>(coef);
    train::adamw_options o;
    o.lr = lr, o.beta1 = beta1, o.beta2 = beta2, o.eps = eps, o.weight_decay = weight_decay;
    train::adamw opt(o);
    std::vector<std::span<float>> ps{std::span<float>(p, static_cast<std::size_t>(n))};
    std::vector<std::span<float>> gs{std::span<float>(gc)};
    opt.step(ps, gs, lr);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "adamw_reference_flat: %s\n", e.what());
  }
  return -1;
}

}  // namespace staticgrad::test
