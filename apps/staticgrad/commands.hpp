#pragma once
// Subcommand registry of the `staticgrad` tool. Each cmd_<name>.cpp defines a
// static `command_registrar` that adds its subcommand to the CLI11 app; main()
// builds the app from the registry. Adding a command = adding one file.
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace staticgrad::cli {

struct command {
  std::string name;
  // Adds the subcommand and its options to `app`; the returned callback runs it
  // and returns the process exit status.
  std::function<std::function<int()>(CLI::App& app)> add;
};

inline std::vector<command>& command_registry() {
  static std::vector<command> commands;
  return commands;
}

struct command_registrar {
  explicit command_registrar(command c) { command_registry().push_back(std::move(c)); }
};

}  // namespace staticgrad::cli
