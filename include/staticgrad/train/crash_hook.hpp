#pragma once
// A test hook: STATICGRAD_CRASH_AT=<point>[@<step>] makes the process stop
// dead (SIGKILL, no cleanup, like a power cut or the OOM killer) when the
// trainer reaches that point, at that step or at any step. The resume tests
// (tests/train/test_resume.cpp) kill a run at every write point this way.
// `sigterm@N` / `sigint@N` instead raise SIGTERM / SIGINT after step N, which
// the trainer answers by saving a checkpoint and stopping.
// STATICGRAD_CRASH_RANK=<r> limits it to the data-parallel rank r (RANK=r,
// docs/multi_gpu.md): the tests' dead or stopped rank.
//
// Points (in the order one step passes them):
//   step                after the optimizer update, before anything is written
//   metrics             after the step's line was appended to metrics.jsonl
//   checkpoint-adapter  inside a checkpoint: the adapter files are in the temporary directory
//   checkpoint-optimizer                     ... and optimizer.safetensors
//   checkpoint-state                         ... and trainer_state.json (not yet renamed)
//   checkpoint-renamed  the checkpoint renamed into place, older ones not yet pruned
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace staticgrad::train {

inline void crash_point(const char* point, std::int64_t step) {
  static const std::string spec = [] {
    const char* e = std::getenv("STATICGRAD_CRASH_AT");
    return std::string(e ? e : "");
  }();
  if (spec.empty()) return;
  static const bool this_rank = [] {
    const char* want = std::getenv("STATICGRAD_CRASH_RANK");
    const char* rank = std::getenv("RANK");
    return !want || std::string(want) == (rank ? rank : "0");
  }();
  if (!this_rank) return;
  const auto at = spec.find('@');
  const std::string name = spec.substr(0, at);
  if (at != std::string::npos && std::strtoll(spec.c_str() + at + 1, nullptr, 10) != step) return;
  if (name == point) std::raise(SIGKILL);
  if (std::string(point) == "step" && name == "sigterm") std::raise(SIGTERM);
  if (std::string(point) == "step" && name == "sigint") std::raise(SIGINT);
}

}  // namespace staticgrad::train
