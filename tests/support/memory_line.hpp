#pragma once
// Reading finetune's memory line (graph::memory_choice_text):
//   "memory: budget B (...); plan: ...; predicted peak P (keeping everything K, smallest plan S); ..."
// with each size "<number> GiB|MiB|KiB" (graph::bytes_text). Tests pick a
// budget between K and S from the run's own numbers.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

namespace staticgrad::test {

// The size after `key` on the first line starting with "memory: ", in bytes; -1 when absent.
inline double memory_line_bytes(const std::string& log, const std::string& key) {
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("memory: ", 0) != 0) continue;
    const auto k = line.find(key);
    if (k == std::string::npos) return -1;
    char* end = nullptr;
    const double v = std::strtod(line.c_str() + k + key.size(), &end);
    const std::string unit(end, end + std::min<std::size_t>(4, std::string(end).size()));
    if (unit == " GiB") return v * double(1 << 30);
    if (unit == " MiB") return v * double(1 << 20);
    if (unit == " KiB") return v * 1024.0;
    return -1;
  }
  return -1;
}

// The whole memory line ("" when absent).
inline std::string memory_line(const std::string& log) {
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("memory: ", 0) == 0) return line;
  return {};
}

// A --memory-budget value (GiB, 9 decimals) for `bytes`.
inline std::string budget_gib(double bytes) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.9f", bytes / double(1 << 30));
  return buf;
}

}  // namespace staticgrad::test
