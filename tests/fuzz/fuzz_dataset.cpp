// libFuzzer: a JSONL file -> the streaming data loader with the Qwen2
// tokenizer, every batch assembled. The first byte picks the options (row
// layout, overflow policy, skip_bad_lines, shuffling), so every example shape
// (text, messages, instruction/output, input_ids/labels) meets every path.
#include <fcntl.h>
#include <unistd.h>

#include <memory>

#include "fuzz/fuzz_util.hpp"
#include "fuzz/qwen_tokenizer.hpp"
#include "staticgrad/io/dataset.hpp"

namespace {
using sg_fuzz::qwen;
std::string scratch_file() {  // one per process, on tmpfs when there is one
  const char* dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return std::string(dir) + "/sg_fuzz_dataset_" + std::to_string(::getpid()) + ".jsonl";
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)qwen();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace staticgrad::io;
  static const std::string path = scratch_file();
  if (size == 0) return 0;
  const std::uint8_t flags = data[0];
  {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ::write(fd, data + 1, size - 1) != ssize_t(size - 1)) std::abort();
    ::close(fd);
  }
  return sg_fuzz::expect_clean([&] {
    data_options o;
    o.max_len = 8 + (flags & 0x30);
    o.rows = 1 + ((flags >> 6) & 1);
    o.layout = (flags & 1) ? row_layout::pad : row_layout::pack;
    o.overflow = (flags & 2) ? overflow_policy::drop : overflow_policy::truncate;
    o.skip_bad_lines = (flags & 4) != 0;
    o.shuffle_buffer = (flags & 8) ? 4 : 1;
    o.pack_bins = 2;
    o.drop_last = (flags & 0x80) != 0;
    data_loader loader({path}, qwen(), o);
    batch b;
    std::size_t n = 0;
    while (loader.next(b)) {
      if (b.input_ids.size() != b.rows * b.seq_len || b.cu_seqlens.back() != std::int32_t(b.rows * b.seq_len))
        std::abort();  // the batch contract (dataset.hpp)
      if (++n > 100000) std::abort();
    }
    (void)stats_json(loader.stats()).dump();
  });
}
