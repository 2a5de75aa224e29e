#pragma once
// `staticgrad finetune` (and `demo`) after the command line: the model's
// config read and every option checked, --out probed, then the backend of
// --device built (the CPU model of the checkpoint's shape, or the CUDA plan),
// then the one training loop (include/staticgrad/train/loop.hpp). train_run.cpp.
#include <string>
#include <vector>

#include "staticgrad/train/train_options.hpp"

namespace staticgrad::cli {

struct finetune_job {
  std::string model;              // Hugging Face checkpoint directory
  std::vector<std::string> data;  // JSONL training data files
  std::string tokenizer;          // empty: the model's, else the vendored one
  std::string device = "cpu";     // cpu | cuda
  train::train_options train;
  std::string config_yaml;        // written to OUT/config.yaml once the options are checked (empty: not)
};

// Throws staticgrad::error on every bad input, before training when it can.
train::train_result run_finetune(const finetune_job& job);

// The exit status of a finished run: 0, or 128 + the signal that stopped it (130 SIGINT, 143 SIGTERM).
inline int exit_status(const train::train_result& r) { return r.stopped_by_signal ? 128 + r.stopped_by_signal : 0; }

}  // namespace staticgrad::cli
