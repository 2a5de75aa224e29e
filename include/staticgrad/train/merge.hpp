#pragma once
// Merging a PEFT LoRA adapter into its base checkpoint (what PEFT's
// merge_and_unload computes): for every targeted projection of every layer
//   W' = W + scaling * B A        (W [out, in], B [out, r], A [r, in])
// every other tensor copied byte for byte.
//
// Invariants:
//  - The output keeps the checkpoint's layout: the same shard files (and
//    model.safetensors.index.json when there is one), tensor names, shapes
//    and dtypes. F32 weights stay F32; BF16 weights are merged in double
//    (B A accumulated in double, added to W in double) and rounded once to
//    bf16, round-to-nearest-even (correctly: see round_to_odd_float). F16 targets are refused (no f16 writer).
//  - config.json is copied unchanged, as are generation_config.json and the
//    tokenizer files when present. Every file is written atomically.
//  - The output directory must differ from the model directory.
//  - Nothing non-finite is written: the adapter is read with its finiteness
//    check, every floating-point tensor copied is checked, and every merged
//    value must be finite (W + scaling * B A can overflow); the error names
//    the tensor and the element, before its shard is written.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/file.hpp"
#include "staticgrad/io/peft_adapter.hpp"

namespace staticgrad::train {

struct merge_report {
  std::int64_t merged = 0;  // projections merged
  std::int64_t copied = 0;  // tensors copied unchanged
  std::vector<std::string> files;  // files written, relative to the output directory
};

// delta = scaling * B A as [out, in] doubles.
inline std::vector<double> lora_delta(const io::lora_adapter::pair& p, std::int64_t out, std::int64_t in,
                                      std::int64_t r, double scaling) {
  std::vector<double> d(static_cast<std::size_t>(out * in), 0.0);
  for (std::int64_t o = 0; o < out; ++o)
    for (std::int64_t k = 0; k < r; ++k) {
      const double b = scaling * double(p.b[std::size_t(o * r + k)]);
      if (b == 0) continue;
      const float* a = p.a.data() + k * in;
      double* row = d.data() + o * in;
      for (std::int64_t i = 0; i < in; ++i) row[i] += b * double(a[i]);
    }
  return d;
}

// double -> float rounding to odd: truncate toward zero, then set the last
// bit when inexact. Followed by float -> bf16 round-to-nearest-even it gives
// the correctly rounded bf16 of the double (float keeps 24 >= 8 + 2 bits), where
// double -> float (nearest) -> bf16 could round twice (a value just off a bf16
// midpoint lands on it, then rounds to even the wrong way).
inline float round_to_odd_float(double x) {
  float f = static_cast<float>(x);
  if (static_cast<double>(f) == x || !std::isfinite(f)) return f;
  if (std::abs(static_cast<double>(f)) > std::abs(x)) f = std::nextafter(f, 0.0f);
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  u |= 1u;
  std::memcpy(&f, &u, 4);
  return f;
}

// Throws unless every W + delta is finite in the output dtype (F32, or BF16
// whose largest finite value is a little below F32's).
inline void require_finite_merge(const std::vector<float>& w, const std::vector<double>& d, io::st_dtype dt,
                                 const error_context& ctx) {
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double v = double(w[i]) + d[i];
    const bool ok = dt == io::st_dtype::f32 ? std::isfinite(float(v)) : std::isfinite(float(bf16(round_to_odd_float(v))));
    if (!ok)
      throw error("the merged weight is not finite at element " + std::to_string(i) + " (W = " +
                      std::to_string(w[i]) + ", scaling * B A = " + std::to_string(d[i]) + "); this shard is not written",
                  ctx);
  }
}

inline merge_report merge_adapter(const std::filesystem::path& model_dir, const std::filesystem::path& adapter_dir,
                                  const std::filesystem::path& out_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  require(fs::is_directory(model_dir, ec), "not a model directory", {model_dir.string(), "--model", {}});
  if (fs::exists(out_dir, ec))
    require(!fs::equivalent(model_dir, out_dir, ec), "the output directory is the model directory; choose another",
            {out_dir.string(), "--out", {}});
  const auto cfg = io::read_hf_config(model_dir / "config.json");
  const auto ad = io::read_peft_adapter(adapter_dir, cfg);
  const auto ck = io::checkpoint::open(model_dir);
  fs::create_directories(out_dir, ec);
  require(!ec, "cannot create the output directory: " + ec.message(), {out_dir.string(), "", {}});

  std::map<std::string, std::pair<std::int64_t, io::lora_target>> targets;  // weight name -> (layer, target)
  for (std::int64_t l = 0; l < ad.num_layers; ++l)
    for (auto t : ad.config.target_modules) targets[io::base_module_name(l, t) + ".weight"] = {l, t};

  merge_report rep;
  const double scaling = ad.config.scaling();
  for (const auto& shard : ck.files()) {
    io::safetensors_file f(shard);
    std::vector<io::tensor_data> ts;
    std::vector<std::vector<float>> f32_store;
    std::vector<std::vector<bf16>> bf16_store;
    f32_store.reserve(f.tensors().size());
    bf16_store.reserve(f.tensors().size());
    for (const auto& tv : f.tensors()) {
      auto it = targets.find(tv.name);
      if (it == targets.end()) {
        if (io::is_float_dtype(tv.dtype)) io::require_finite(tv);
        ts.push_back({tv.name, tv.dtype, tv.shape, tv.bytes});
        ++rep.copied;
        continue;
      }
      const auto [layer, t] = it->second;
      const std::int64_t out = io::target_out_features(t, cfg), in = io::target_in_features(t, cfg);
      io::require_shape(tv, {out, in});
      require(tv.dtype == io::st_dtype::f32 || tv.dtype == io::st_dtype::bf16,
              "can merge into F32 or BF16 weights only, this one is " + std::string(io::st_dtype_name(tv.dtype)),
              {f.path(), tv.name, {}});
      io::require_finite(tv);
      const auto w = io::to_f32(tv);
      const auto d = lora_delta(ad.at(layer, t), out, in, ad.config.r, scaling);
      require_finite_merge(w, d, tv.dtype, {f.path(), tv.name, {}});
      if (tv.dtype == io::st_dtype::f32) {
        auto& v = f32_store.emplace_back(w.size());
        for (std::size_t i = 0; i < w.size(); ++i) v[i] = float(double(w[i]) + d[i]);
        ts.push_back(io::f32_tensor(tv.name, tv.shape, v));
      } else {
        auto& v = bf16_store.emplace_back(w.size());
        for (std::size_t i = 0; i < w.size(); ++i) v[i] = bf16(round_to_odd_float(double(w[i]) + d[i]));
        ts.push_back(io::bf16_tensor(tv.name, tv.shape, v));
      }
      targets.erase(it);
      ++rep.merged;
    }
    const auto name = fs::path(shard).filename();
    auto meta = f.metadata();
    if (meta.empty()) meta["format"] = "pt";
    io::write_safetensors(out_dir / name, std::move(ts), meta);
    rep.files.push_back(name.string());
  }
  if (!targets.empty())
    throw error("the adapter targets this weight, which the checkpoint lacks", {ck.source(), targets.begin()->first, {}});
  for (const char* extra : {"config.json", "model.safetensors.index.json", "generation_config.json", "tokenizer.json",
                            "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                            "added_tokens.json"}) {
    if (!fs::exists(model_dir / extra, ec)) continue;
    io::write_text_atomic(out_dir / extra, io::read_file((model_dir / extra).string()));
    rep.files.push_back(extra);
  }
  return rep;
}

}  // namespace staticgrad::train
