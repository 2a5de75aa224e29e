#pragma once
// Runs a shell command line (the staticgrad tool with its arguments and a
// redirection) and returns its exit code and what it printed on stdout.
// Shared by the tests that drive the command line tool.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include <doctest/doctest.h>

namespace staticgrad::test {

struct run_result {
  int rc = 0;
  std::string out;
};

inline run_result run_command(const std::string& command_line) {
  run_result r;
  FILE* p = ::popen(command_line.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = ::pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

}  // namespace staticgrad::test
