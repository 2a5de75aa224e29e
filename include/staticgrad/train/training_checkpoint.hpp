#pragma once
// Training checkpoints: OUT/checkpoint-<step>/ holds everything a resumed run
// needs to continue exactly where the killed one was:
//   adapter_config.json + adapter_model.safetensors  the PEFT adapter (loadable as is)
//   optimizer.safetensors   AdamW's exp_avg and exp_avg_sq of every A and B (F32, PEFT key
//                           names prefixed "exp_avg." / "exp_avg_sq."), its step count in the metadata
//   trainer_state.json      step, schedule, data position (epoch + loader batches taken in it),
//                           seeds, evaluation state, the options that must not change; written LAST
//
// Atomic as a whole: the files are written into OUT/.tmp-checkpoint-<step>-<pid>/,
// each itself atomic (io::write_file_atomic), then the directory is renamed
// into place. A checkpoint-<step> without trainer_state.json is never read.
// Stale temporaries of a killed run are swept when the next run starts.
// The RNG state is not stored as bits: every random draw is a function of the
// seed and a position (data order: mix_seed(seed, epoch); dropout masks:
// mix_seed(mix_seed(seed, step), micro-batch); LoRA init: seed), so the step
// and the data position restore it.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "staticgrad/io/atomic_file.hpp"
#include "staticgrad/io/json_util.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/io/safetensors.hpp"
#include "staticgrad/io/safetensors_writer.hpp"
#include "staticgrad/train/backend.hpp"
#include "staticgrad/train/crash_hook.hpp"

namespace staticgrad::train {

namespace fs = std::filesystem;

inline constexpr const char* trainer_state_format = "staticgrad-trainer-state-1";

struct trainer_state {
  std::int64_t step = 0, total_steps = 0;
  std::int64_t epoch = 0;          // 0-based pass the loader is in
  std::int64_t epoch_batches = 0;  // loader batches taken in that pass
  std::int64_t tokens_total = 0;
  double elapsed_s = 0;
  double best_eval = 0;            // valid when evals > 0
  std::int64_t best_step = 0;      // the step of best_eval (0: none)
  std::int64_t evals = 0, evals_without_improvement = 0;
  nlohmann::json options = nlohmann::json::object();  // by flag name: what a resumed run must repeat
};

inline nlohmann::json to_json(const trainer_state& s) {
  return {{"format", trainer_state_format},
          {"step", s.step},
          {"total_steps", s.total_steps},
          {"data", {{"epoch", s.epoch}, {"epoch_batches", s.epoch_batches}}},
          {"rng", {{"kind", "derived from --seed and the step / data position"}}},
          {"tokens_total", s.tokens_total},
          {"elapsed_s", s.elapsed_s},
          {"eval",
           {{"evals", s.evals},
            {"best", s.best_eval},
            {"best_step", s.best_step},
            {"without_improvement", s.evals_without_improvement}}},
          {"options", s.options}};
}

inline trainer_state trainer_state_from_json(const nlohmann::json& j, const std::string& file) {
  auto get = [&](const nlohmann::json& o, const char* k) -> const nlohmann::json& {
    require(o.is_object() && o.contains(k), "missing key", {file, k, {}});
    return o.at(k);
  };
  require(j.is_object() && j.value("format", "") == trainer_state_format,
          std::string("not a staticgrad trainer state (expected \"format\": \"") + trainer_state_format + "\")",
          {file, "format", {}});
  trainer_state s;
  try {
    s.step = get(j, "step").get<std::int64_t>();
    s.total_steps = get(j, "total_steps").get<std::int64_t>();
    s.epoch = get(get(j, "data"), "epoch").get<std::int64_t>();
    s.epoch_batches = get(get(j, "data"), "epoch_batches").get<std::int64_t>();
    s.tokens_total = get(j, "tokens_total").get<std::int64_t>();
    s.elapsed_s = get(j, "elapsed_s").get<double>();
    s.evals = get(get(j, "eval"), "evals").get<std::int64_t>();
    s.best_eval = get(get(j, "eval"), "best").get<double>();
    s.evals_without_improvement = get(get(j, "eval"), "without_improvement").get<std::int64_t>();
    s.best_step = get(j, "eval").value("best_step", std::int64_t{0});  // absent in states written before it existed
    s.options = get(j, "options");
  } catch (const nlohmann::json::exception& e) {
    throw error(std::string("malformed trainer state: ") + e.what(), {file, "", {}});
  }
  require(s.step >= 1 && s.epoch >= 0 && s.epoch_batches >= 0, "negative or zero positions", {file, "step", {}});
  return s;
}

inline std::string checkpoint_name(std::int64_t step) { return "checkpoint-" + std::to_string(step); }

// The complete checkpoints under `out` (those with trainer_state.json), by step.
inline std::vector<std::pair<std::int64_t, fs::path>> list_checkpoints(const fs::path& out) {
  std::vector<std::pair<std::int64_t, fs::path>> v;
  std::error_code ec;
  if (!fs::is_directory(out, ec)) return v;
  for (const auto& e : fs::directory_iterator(out, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("checkpoint-", 0) != 0 || !e.is_directory()) continue;
    const std::string num = n.substr(11);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos || num.size() > 18) continue;
    if (!fs::exists(e.path() / "trainer_state.json", ec)) continue;
    v.emplace_back(std::stoll(num), e.path());
  }
  std::sort(v.begin(), v.end());
  return v;
}

// Removes what a killed run left half-written in `out`: temporary checkpoint
// directories and the temporaries of atomic files. Returns how many.
// OUT/best_adapter: the PEFT adapter of the best eval loss so far (written at
// each new best when --eval-data is given), with best.json {step, eval_loss}.
inline constexpr const char* best_adapter_dir = "best_adapter";

inline int sweep_stale_temporaries(const fs::path& out) {
  int n = 0;
  std::error_code ec;
  if (!fs::is_directory(out, ec)) return 0;
  std::vector<fs::path> doomed;
  for (const auto& e : fs::directory_iterator(out, ec)) {
    const std::string f = e.path().filename().string();
    const bool tmp_dir = f.rfind(".tmp-checkpoint-", 0) == 0 || f.rfind(".old-checkpoint-", 0) == 0 ||
                         f.rfind(".tmp-" + std::string(best_adapter_dir), 0) == 0 ||
                         f.rfind(".old-" + std::string(best_adapter_dir), 0) == 0;
    const bool tmp_file = f.size() > 12 && f[0] == '.' && f.find(".tmp.") == f.size() - 11;  // ".<name>.tmp.XXXXXX"
    if (tmp_dir || tmp_file) doomed.push_back(e.path());
  }
  for (const auto& p : doomed) n += fs::remove_all(p, ec) > 0;
  return n;
}

inline void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) ::fsync(fd), ::close(fd);
}

inline std::string optimizer_key(const char* moment, std::int64_t l, io::lora_target t, char w) {
  return std::string(moment) + "." + io::lora_key(l, t, w);
}

inline void write_optimizer(const fs::path& file, const optimizer_state& s, const io::hf_config& cfg) {
  std::vector<io::tensor_data> ts;
  for (std::int64_t l = 0; l < s.m.num_layers; ++l)
    for (auto t : s.m.config.target_modules) {
      const std::int64_t r = s.m.config.r, in = io::target_in_features(t, cfg), out = io::target_out_features(t, cfg);
      for (const auto* mom : {&s.m, &s.v}) {
        const char* name = mom == &s.m ? "exp_avg" : "exp_avg_sq";
        ts.push_back(io::f32_tensor(optimizer_key(name, l, t, 'A'), {r, in}, mom->at(l, t).a));
        ts.push_back(io::f32_tensor(optimizer_key(name, l, t, 'B'), {out, r}, mom->at(l, t).b));
      }
    }
  io::write_safetensors(file, std::move(ts), {{"format", "pt"}, {"step", std::to_string(s.steps)}});
}

inline optimizer_state read_optimizer(const fs::path& file, const io::lora_config& lc, const io::hf_config& cfg) {
  io::safetensors_file f(file);
  optimizer_state s{0, io::make_lora_adapter(lc, cfg), io::make_lora_adapter(lc, cfg)};
  const auto& md = f.metadata();
  const auto it = md.find("step");
  require(it != md.end() && !it->second.empty() && it->second.find_first_not_of("0123456789") == std::string::npos,
          "missing or malformed metadata \"step\" (AdamW's update count)", {file.string(), "step", {}});
  s.steps = std::stoll(it->second);
  for (std::int64_t l = 0; l < s.m.num_layers; ++l)
    for (auto t : lc.target_modules)
      for (auto* mom : {&s.m, &s.v})
        for (char w : {'A', 'B'}) {
          const auto key = optimizer_key(mom == &s.m ? "exp_avg" : "exp_avg_sq", l, t, w);
          const auto* tv = f.find(key);
          require(tv != nullptr, "missing tensor", {file.string(), key, {}});
          auto& dst = w == 'A' ? mom->at(l, t).a : mom->at(l, t).b;
          const auto v = io::to_f32(*tv);
          require(v.size() == dst.size(), "expected " + std::to_string(dst.size()) + " elements, got " +
                                              std::to_string(v.size()),
                  {file.string(), key, {}});
          std::copy(v.begin(), v.end(), dst.begin());
        }
  return s;
}

// Writes out/checkpoint-<state.step> atomically (see the top of the file).
// Moves the complete directory `tmp` to `dst` (both in `out`), replacing an
// older `dst`: rename(2) will not replace a non-empty directory, so the older
// one is moved aside first, then removed. A kill at any point leaves either
// the older or the newer directory at `dst` (and temporaries the next run sweeps).
inline void replace_directory(const fs::path& tmp, const fs::path& dst, const fs::path& out) {
  std::error_code ec;
  fsync_dir(tmp);
  const fs::path old = out / (".old-" + dst.filename().string() + "-" + std::to_string(::getpid()));
  if (fs::exists(dst, ec)) {
    fs::rename(dst, old, ec);
    require(!ec, "cannot move the older directory aside: " + ec.message(), {dst.string(), "", {}});
  }
  fs::rename(tmp, dst, ec);
  require(!ec, "cannot rename the directory into place: " + ec.message(), {dst.string(), "", {}});
  fsync_dir(out);
  fs::remove_all(old, ec);
}

// OUT/best_adapter (replaced whole): the adapter and best.json.
inline fs::path write_best_adapter(const fs::path& out, const io::lora_adapter& adapter, const io::hf_config& cfg,
                                   std::int64_t step, double eval_loss) {
  const fs::path dst = out / best_adapter_dir;
  const fs::path tmp = out / (".tmp-" + std::string(best_adapter_dir) + "-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  require(!ec, "cannot create the temporary directory: " + ec.message(), {tmp.string(), "", {}});
  io::write_peft_adapter(tmp, adapter, cfg);
  io::write_text_atomic(tmp / "best.json", nlohmann::json{{"step", step}, {"eval_loss", eval_loss}}.dump(2) + "\n");
  replace_directory(tmp, dst, out);
  return dst;
}

inline fs::path write_checkpoint(const fs::path& out, const io::lora_adapter& adapter, const io::hf_config& cfg,
                                 const optimizer_state& opt, const trainer_state& state) {
  const std::int64_t step = state.step;
  const fs::path dst = out / checkpoint_name(step);
  const fs::path tmp = out / (".tmp-" + checkpoint_name(step) + "-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  require(!ec, "cannot create the temporary checkpoint directory: " + ec.message(), {tmp.string(), "", {}});
  io::write_peft_adapter(tmp, adapter, cfg);
  crash_point("checkpoint-adapter", step);
  write_optimizer(tmp / "optimizer.safetensors", opt, cfg);
  crash_point("checkpoint-optimizer", step);
  io::write_text_atomic(tmp / "trainer_state.json", to_json(state).dump(2) + "\n");
  crash_point("checkpoint-state", step);
  replace_directory(tmp, dst, out);
  crash_point("checkpoint-renamed", step);
  return dst;
}

// Deletes the oldest complete checkpoints until `keep` remain (keep > 0).
inline void prune_checkpoints(const fs::path& out, std::int64_t keep) {
  auto all = list_checkpoints(out);
  std::error_code ec;
  for (std::size_t i = 0; keep > 0 && all.size() > std::size_t(keep) + i; ++i) fs::remove_all(all[i].second, ec);
}

struct loaded_checkpoint {
  fs::path dir;
  io::lora_adapter adapter;
  optimizer_state optimizer;
  trainer_state state;
};

// `dir`: a checkpoint (holding trainer_state.json), or a directory of them (its newest).
inline fs::path resolve_checkpoint(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir / "trainer_state.json", ec)) return dir;
  require(fs::is_directory(dir, ec), "no such directory", {dir.string(), "--resume", {}});
  const auto all = list_checkpoints(dir);
  require(!all.empty(), "neither a checkpoint (no trainer_state.json) nor a directory holding a complete checkpoint-<step>",
          {dir.string(), "--resume", {}});
  return all.back().second;
}

inline loaded_checkpoint read_checkpoint(const fs::path& dir, const io::hf_config& cfg) {
  loaded_checkpoint c;
  c.dir = dir;
  const fs::path sf = dir / "trainer_state.json";
  c.state = trainer_state_from_json(io::read_json_file(sf), sf.string());
  c.adapter = io::read_peft_adapter(dir, cfg);
  c.optimizer = read_optimizer(dir / "optimizer.safetensors", c.adapter.config, cfg);
  return c;
}

}  // namespace staticgrad::train
