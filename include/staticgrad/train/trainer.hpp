#pragma once
// The CPU trainer: the one training loop (loop.hpp) over the CPU model
// (cpu_backend.hpp). For library users and the tests; `staticgrad finetune`
// builds the same two pieces (apps/staticgrad/cmd_finetune.cpp).
//
//   auto model = models::qwen2_model<S>::load(dir);
//   train::trainer<S> tr(*model, tok, {"train.jsonl"}, options);
//   auto result = tr.run();   // progress on options.log; the PEFT adapter in options.out
#include <string>
#include <vector>

#include "staticgrad/io/tokenizer.hpp"
#include "staticgrad/models/qwen2_model.hpp"
#include "staticgrad/train/cpu_backend.hpp"
#include "staticgrad/train/loop.hpp"

namespace staticgrad::train {

template <class Shape>
class trainer {
 public:
  // `model` and `tok` must outlive the trainer.
  trainer(models::qwen2_model<Shape>& model, const io::tokenizer& tok, std::vector<std::string> files,
          const train_options& o)
      : backend_((check_options(o, &model.config()), model), o.lora, o.optim), loop_(backend_, tok, std::move(files), o) {}

  std::int64_t rows() const { return loop_.rows(); }
  train_result run() { return loop_.run(); }
  const io::lora_adapter& adapter() const { return loop_.adapter(); }  // after run()

 private:
  cpu_backend<Shape> backend_;
  training_loop loop_;
};

}  // namespace staticgrad::train
