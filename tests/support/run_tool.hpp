#pragma once
// Runs a shell command line (the staticgrad tool with its arguments and a
// redirection) and returns its exit code and what it printed on stdout; the
// tool's path, a skip when it was not built, and a whole file as a string.
// Shared by the tests that drive the command line tool (each such target
// defines STATICGRAD_BINARY_DIR).
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
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

#ifdef STATICGRAD_BINARY_DIR
// The staticgrad tool of this build.
inline const std::string& tool_path() {
  static const std::string path = std::string(STATICGRAD_BINARY_DIR) + "/staticgrad";
  return path;
}

// Whether the tool was built; a test case returns early (and says so) if not.
inline bool have_tool() {
  if (std::filesystem::exists(tool_path())) return true;
  MESSAGE("staticgrad tool not built: skipped");
  return false;
}
#endif

// The whole file, bytes as they are ("" if it cannot be opened).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace staticgrad::test
