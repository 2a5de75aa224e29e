#!/usr/bin/env bash
# Installs every Debian package staticgrad needs to build, test and benchmark.
# Why each is there: docs/dependencies.md.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build git python3
  libeigen3-dev        # CPU backend: fused loops and GEMMs
  doctest-dev          # unit tests
  libbenchmark-dev     # Google Benchmark: kernels, tokenizer, training step
  nlohmann-json3-dev   # config.json, safetensors headers, JSONL data, tokenizer.json
  libcli11-dev         # the staticgrad command line
  libfmt-dev           # formatting of explain() and error messages
  zlib1g-dev           # gzip: the vendored tokenizer.json.gz is read with zlib
  libicu-dev           # tokenizer: Unicode categories and NFC normalization
  clang-14 libclang-rt-14-dev  # libFuzzer harnesses (tests/fuzz; -fsanitize=fuzzer needs clang's runtime)
  libyaml-cpp-dev      # finetune --config run.yaml
  libxml2-utils        # tests: xmllint parses the SVG of training.html
)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "setup: all packages present"
