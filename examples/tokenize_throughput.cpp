// Encodes every *.py file of a directory (plus any further files named) as a
// batch of documents on 1, 2, 4, ... threads and prints MB/s: encode_batch
// and its thread scaling, without Google Benchmark (bench/bench_tokenizer.cpp
// is the benchmark; this runs anywhere the library builds).
//
//   example_tokenize_throughput TOKENIZER PYDIR [FILE...]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "staticgrad/io/tokenizer.hpp"

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER PYDIR [FILE...]\n", argv[0]);
    return 2;
  }
  namespace io = staticgrad::io;
  auto tok = io::tokenizer::from_file(argv[1]);
  std::vector<std::string> files;
  for (auto& e : std::filesystem::directory_iterator(argv[2]))
    if (e.path().extension() == ".py") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  for (int i = 3; i < argc; ++i) files.push_back(argv[i]);
  std::vector<std::string> docs;
  std::size_t bytes = 0;
  for (auto& f : files) {
    docs.push_back(io::read_file(f));
    bytes += docs.back().size();
  }
  unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  std::printf("%zu documents, %.2f MB, %u hardware threads\n", docs.size(), double(bytes) / 1e6, hw);
  for (unsigned t = 1; t <= hw; t *= 2) {
    double best = 1e30;
    std::size_t tokens = 0;
    for (int rep = 0; rep < 4; ++rep) {  // the first pass also warms each thread's word cache
      auto t0 = std::chrono::steady_clock::now();
      auto out = tok.encode_batch(docs, t);
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, s);
      tokens = 0;
      for (auto& v : out) tokens += v.size();
    }
    std::printf("threads %2u: %8.1f MB/s  (%zu tokens, best of 4: %.1f ms)\n", t, double(bytes) / 1e6 / best, tokens,
                best * 1e3);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
