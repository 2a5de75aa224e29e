// The `staticgrad` command line tool: explain, demo, loss, finetune, merge,
// tokenize, ... Each subcommand lives in cmd_<name>.cpp.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <map>

#include "commands.hpp"
#include "staticgrad/core/error.hpp"

int main(int argc, char** argv) {
  using namespace staticgrad::cli;
  CLI::App app{"staticgrad: LoRA fine-tuning of Qwen2.5 with the training computation as a type"};
  app.require_subcommand(1);
  auto& registry = command_registry();
  std::sort(registry.begin(), registry.end(), [](auto& a, auto& b) { return a.name < b.name; });
  std::map<std::string, std::function<int()>> runners;
  for (auto& c : registry) runners[c.name] = c.add(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error (a bad value such as
    // `--lr abc`, a missing or unknown option) exits 1, not CLI11's own codes.
    return app.exit(e) == 0 ? 0 : 1;
  }
  try {
    for (auto* sub : app.get_subcommands()) return runners.at(sub->get_name())();
  } catch (const staticgrad::error& e) {
    std::fprintf(stderr, "staticgrad: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "staticgrad: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
