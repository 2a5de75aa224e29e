#pragma once
// A read-only memory map of a whole file (POSIX mmap), move-only.
//
// Invariants:
//  - `bytes()` spans exactly the file size observed at open; an empty file
//    gives an empty span (mmap of length 0 is not allowed, so none is made).
//  - The mapping lives as long as the object; moving keeps the addresses, so
//    views into the bytes stay valid across moves.
//  - Caveat (inherent to mmap): if another process truncates the file while
//    it is mapped, touching the lost pages raises SIGBUS. Checkpoints are
//    expected not to change while training reads them.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <utility>

#include "staticgrad/core/error.hpp"

namespace staticgrad::io {

class mapped_file {
 public:
  mapped_file() = default;
  explicit mapped_file(const std::filesystem::path& path) : path_(path.string()) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw error(std::string("cannot open: ") + std::strerror(errno), {path_, {}, {}});
    struct stat st{};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      throw error(std::string("cannot stat: ") + std::strerror(e), {path_, {}, {}});
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      throw error("not a regular file", {path_, {}, {}});
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int e = errno;
        ::close(fd);
        throw error(std::string("cannot mmap: ") + std::strerror(e), {path_, {}, {}});
      }
      data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);  // the mapping keeps its own reference to the file
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  mapped_file(mapped_file&& o) noexcept { swap(o); }
  mapped_file& operator=(mapped_file&& o) noexcept {
    if (this != &o) {
      release();
      swap(o);
    }
    return *this;
  }
  ~mapped_file() { release(); }

  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  std::size_t size() const noexcept { return size_; }
  const std::string& path() const noexcept { return path_; }

 private:
  void swap(mapped_file& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(path_, o.path_);
  }
  void release() noexcept {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::string path_;
};

}  // namespace staticgrad::io
