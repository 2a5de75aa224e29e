// Tokenizer throughput (docs/performance.md has the measured table).
// Corpus: every /root/.pyenv/versions/3.11.7/lib/python3.11/*.py in name order
// (code with docstrings) followed by the license texts listed in
// bench_corpus_files() (prose); each file is one document. Override the
// Python directory with STATICGRAD_BENCH_PYDIR. scripts/bench_hf_tokenizer.py
// builds the identical corpus for Hugging Face `tokenizers`.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "staticgrad/io/tokenizer.hpp"

namespace {

std::vector<std::string> bench_corpus_files() {
  namespace fs = std::filesystem;
  const char* env = std::getenv("STATICGRAD_BENCH_PYDIR");
  std::string pydir = env ? env : "/root/.pyenv/versions/3.11.7/lib/python3.11";
  std::vector<std::string> files;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(pydir, ec))
    if (e.path().extension() == ".py") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  for (const char* l : {"Apache-2.0", "Artistic", "GFDL-1.3", "GPL-2", "GPL-3", "LGPL-2.1", "LGPL-3", "MPL-1.1", "MPL-2.0"})
    files.push_back(std::string("/usr/share/common-licenses/") + l);
  return files;
}

struct corpus {
  std::vector<std::string> docs;
  std::size_t bytes = 0;
};

const corpus& get_corpus() {
  static corpus c = [] {
    corpus c;
    for (auto& f : bench_corpus_files()) {
      std::error_code ec;
      if (!std::filesystem::exists(f, ec)) continue;
      c.docs.push_back(staticgrad::io::read_file(f));
      c.bytes += c.docs.back().size();
    }
    return c;
  }();
  return c;
}

const staticgrad::io::tokenizer& qwen() {
  static auto t = staticgrad::io::tokenizer::from_file(std::string(STATICGRAD_SOURCE_DIR) + "/data/qwen2-tokenizer");
  return t;
}

// One thread, one document after another (the word cache warm after the
// first iteration, as in a long training run).
void BM_encode_single_thread(benchmark::State& st) {
  const auto& c = get_corpus();
  const auto& t = qwen();
  std::size_t tokens = 0;
  for (auto _ : st) {
    tokens = 0;
    for (const auto& d : c.docs) tokens += t.encode(d).size();
    benchmark::DoNotOptimize(tokens);
  }
  st.SetBytesProcessed(std::int64_t(st.iterations()) * std::int64_t(c.bytes));
  st.counters["MB/s"] = benchmark::Counter(double(c.bytes) / 1e6, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["tokens"] = double(tokens);
  st.counters["docs"] = double(c.docs.size());
}
BENCHMARK(BM_encode_single_thread)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

// encode_batch over all documents on N threads.
void BM_encode_batch(benchmark::State& st) {
  const auto& c = get_corpus();
  const auto& t = qwen();
  for (auto _ : st) {
    auto out = t.encode_batch(c.docs, unsigned(st.range(0)));
    benchmark::DoNotOptimize(out.data());
  }
  st.SetBytesProcessed(std::int64_t(st.iterations()) * std::int64_t(c.bytes));
  st.counters["MB/s"] = benchmark::Counter(double(c.bytes) / 1e6, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_encode_batch)->Arg(1)->Arg(2)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

// Cold cache: a fresh thread per iteration, so every word goes through BPE
// once (the worst case: a first pass over unseen text).
void BM_encode_cold_cache(benchmark::State& st) {
  const auto& c = get_corpus();
  const auto& t = qwen();
  for (auto _ : st) {
    std::thread th([&] {
      std::size_t n = 0;
      for (const auto& d : c.docs) n += t.encode(d).size();
      benchmark::DoNotOptimize(n);
    });
    th.join();
  }
  st.SetBytesProcessed(std::int64_t(st.iterations()) * std::int64_t(c.bytes));
  st.counters["MB/s"] = benchmark::Counter(double(c.bytes) / 1e6, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_encode_cold_cache)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
