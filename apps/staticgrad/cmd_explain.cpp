// staticgrad explain --size 1.5b [--rank 16] [--out-of-place]
// Prints the compiled plan of the Qwen2.5 block of that size with LoRA on all
// seven projections: both schedules, the saved values, the buffer plan.
#include <cstdio>

#include "commands.hpp"
#include "staticgrad/graph/explain.hpp"
#include "staticgrad/models/qwen2.hpp"

namespace {

struct explain_opts {
  std::string size = "0.5b";
  int rank = 16;
  bool out_of_place = false;
};

staticgrad::cli::command_registrar reg{{"explain", [](CLI::App& app) {
  auto o = std::make_shared<explain_opts>();
  auto* sub = app.add_subcommand("explain", "Print the compiled training plan of a Qwen2.5 block (LoRA on all seven projections)");
  sub->add_option("size", o->size, "Model size: tiny, 0.5b, 1.5b, 3b, 7b, 14b, 32b, 72b")->capture_default_str();
  sub->add_option("--size", o->size, "Model size (same as the positional argument)");
  sub->add_option("--rank", o->rank, "LoRA rank r, for the bytes of the saved Z = dropout(x) A^T")
      ->check(CLI::Range(1, 4096))->capture_default_str();
  sub->add_flag("--out-of-place", o->out_of_place, "Explain the block written without in-place ops, for comparison");
  return std::function<int()>([o] {
    using namespace staticgrad;
    models::dispatch_shape_name(o->size, [&]<class S>() {
      const std::string title = "Qwen2.5 block " + models::shape_text<S>() + ", LoRA on q, k, v, o, gate, up, down" +
                                (o->out_of_place ? ", out of place" : "");
      const graph::explain_options eo{o->rank, title};
      const std::string text = o->out_of_place
                                   ? graph::explain<models::qwen2_block<S, models::lora_mask::all_seven, false>>(eo)
                                   : graph::explain<models::qwen2_block<S>>(eo);
      std::fputs(text.c_str(), stdout);
    });
    return 0;
  });
}}};

}  // namespace
