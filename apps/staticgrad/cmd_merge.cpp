// `staticgrad merge`: base checkpoint + PEFT adapter -> merged checkpoint
// (W + scaling * B A, in the checkpoint's dtype). See docs/cli.md.
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "staticgrad/train/merge.hpp"

namespace {

struct merge_opts {
  std::string model, adapter, out;
};

staticgrad::cli::command_registrar reg{{"merge", [](CLI::App& app) {
  auto* sub = app.add_subcommand("merge", "Merge a PEFT LoRA adapter into its base checkpoint (W + scaling * B A)");
  auto o = std::make_shared<merge_opts>();
  sub->add_option("--model", o->model, "base Hugging Face checkpoint directory")->required();
  sub->add_option("--adapter", o->adapter, "PEFT adapter directory")->required();
  sub->add_option("--out", o->out, "output directory for the merged checkpoint")->required();
  return std::function<int()>([o] {
    const auto rep = staticgrad::train::merge_adapter(o->model, o->adapter, o->out);
    std::cout << nlohmann::json{{"merged", rep.merged}, {"copied", rep.copied}, {"files", rep.files}, {"out", o->out}}
                     .dump()
              << "\n";
    return 0;
  });
}}};

}  // namespace
