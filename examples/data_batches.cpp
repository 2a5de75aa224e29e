// Streams training batches from JSONL files and prints each batch's arrays:
// what a trainer receives from staticgrad::io::data_loader.
//
//   example_data_batches TOKENIZER MAX_LEN ROWS pack|pad FILE...
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "staticgrad/io/dataset.hpp"

namespace {
void print_row(const char* name, const std::vector<std::int32_t>& v, std::size_t r, std::size_t L) {
  std::printf("  %-10s", name);
  for (std::size_t t = 0; t < L; ++t) std::printf(" %6d", v[r * L + t]);
  std::printf("\n");
}
}  // namespace

int main(int argc, char** argv) try {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s TOKENIZER MAX_LEN ROWS pack|pad FILE...\n", argv[0]);
    return 2;
  }
  namespace io = staticgrad::io;
  auto tok = io::tokenizer::from_file(argv[1]);
  io::data_options o;
  o.max_len = std::size_t(std::atoi(argv[2]));
  o.rows = std::size_t(std::atoi(argv[3]));
  o.layout = std::string(argv[4]) == "pad" ? io::row_layout::pad : io::row_layout::pack;
  o.shuffle_buffer = 0;  // file order, so the output is easy to follow
  io::data_loader loader(std::vector<std::string>(argv + 5, argv + argc), tok, o);
  io::batch b;
  while (loader.next(b)) {
    std::printf("batch %zu: %zu rows x %zu, %zu examples, cu_seqlens =", loader.stats().batches, b.rows, b.seq_len,
                b.examples);
    for (auto s : b.cu_seqlens) std::printf(" %d", s);
    std::printf("\n");
    for (std::size_t r = 0; r < b.rows; ++r) {
      std::printf(" row %zu\n", r);
      print_row("input_ids", b.input_ids, r, b.seq_len);
      print_row("labels", b.labels, r, b.seq_len);
      print_row("positions", b.positions, r, b.seq_len);
    }
  }
  const auto& s = loader.stats();
  std::printf("examples read %zu, used %zu, truncated %zu, dropped too long %zu, dropped without targets %zu, "
              "bad lines skipped %zu; tokens %zu, trained %zu, pad %zu; rows %zu, batches %zu\n",
              s.examples_read, s.examples_used, s.truncated, s.dropped_too_long, s.dropped_no_targets,
              s.bad_lines_skipped, s.tokens, s.trained_tokens, s.pad_tokens, s.rows, s.batches);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
