#pragma once
// `finetune --config run.yaml`: a YAML map whose keys are the subcommand's
// long option names without the dashes (lora-r: 16, data: [a.jsonl, b.jsonl],
// use-rslora: true). Values the command line gives win over the file's.
// yaml-cpp parses; each value goes through the option's own CLI11 conversion
// and check, as if typed on the command line. config_yaml.cpp.
#include <string>

#include <CLI/CLI.hpp>

namespace staticgrad::cli {

// Applies `file` to the options of `sub` that the command line left unset.
// Errors (staticgrad::error) name the file, the line and the key.
void apply_yaml_config(CLI::App& sub, const std::string& file);

// The resolved configuration of `sub` (every long option: its value from the
// command line or the file, else its default) as YAML that --config reads back.
std::string resolved_yaml(const CLI::App& sub);

}  // namespace staticgrad::cli
