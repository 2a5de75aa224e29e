#pragma once
// Atomic file output: every file staticgrad writes (safetensors, config.json,
// adapter_config.json, JSON reports) goes through `write_file_atomic`.
//
// Invariants:
//  - The bytes are written to a fresh temporary file in the SAME directory as
//    the target (rename(2) is only atomic within one file system), flushed
//    with fsync, and then renamed over the target. Readers see either the old
//    file or the complete new one, never a prefix.
//  - On any failure the temporary file is removed and the target is left as
//    it was; the failure is reported as `staticgrad::error` naming the file.
//  - After the rename the directory is fsync'ed (best effort) so that the new
//    name survives a crash.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "staticgrad/core/error.hpp"

namespace staticgrad::io {

namespace detail {

inline std::string errno_text(int e) { return std::string(std::strerror(e)); }

// Writes all of [p, p+n) to fd, retrying on EINTR and short writes.
inline bool write_all(int fd, const std::byte* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

}  // namespace detail

// A sink handed to the producer of an atomic file: append bytes in order.
class atomic_sink {
 public:
  explicit atomic_sink(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  void write(std::span<const std::byte> bytes) {
    if (!detail::write_all(fd_, bytes.data(), bytes.size()))
      throw error("cannot write: " + detail::errno_text(errno), {path_, {}, {}});
  }
  void write(std::string_view s) { write(std::as_bytes(std::span<const char>(s.data(), s.size()))); }

 private:
  int fd_;
  std::string path_;
};

// Writes a file atomically; `produce` appends the content to the sink. The
// parent directory must exist. Throws `staticgrad::error` on failure.
inline void write_file_atomic(const std::filesystem::path& target,
                              const std::function<void(atomic_sink&)>& produce) {
  namespace fs = std::filesystem;
  const std::string tpath = target.string();
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw error("cannot write: the directory '" + dir.string() + "' does not exist", {tpath, {}, {}});
  if (fs::is_directory(target, ec))
    throw error("cannot write: the path is a directory, expected a file path", {tpath, {}, {}});

  // mkstemp needs a mutable template; the temporary lives next to the target.
  std::string tmpl = (dir / ("." + target.filename().string() + ".tmp.XXXXXX")).string();
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) throw error("cannot create a temporary file: " + detail::errno_text(errno), {tpath, {}, {}});
  bool done = false;
  auto cleanup = [&] {
    if (!done) ::unlink(tmpl.c_str());
  };
  try {
    atomic_sink sink(fd, tpath);
    produce(sink);
    // mkstemp creates 0600; give the file the usual 0644 (minus umask).
    const mode_t um = ::umask(0);
    ::umask(um);
    ::fchmod(fd, 0666 & ~um);
    if (::fsync(fd) != 0) throw error("cannot fsync: " + detail::errno_text(errno), {tpath, {}, {}});
  } catch (...) {
    ::close(fd);
    cleanup();
    throw;
  }
  if (::close(fd) != 0) {
    const int e = errno;
    cleanup();
    throw error("cannot close: " + detail::errno_text(e), {tpath, {}, {}});
  }
  if (::rename(tmpl.c_str(), tpath.c_str()) != 0) {
    const int e = errno;
    cleanup();
    throw error("cannot rename the temporary file into place: " + detail::errno_text(e), {tpath, {}, {}});
  }
  done = true;
  // Persist the directory entry (best effort: some file systems refuse).
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// Convenience: write a whole string (JSON, text) atomically.
inline void write_text_atomic(const std::filesystem::path& target, std::string_view text) {
  write_file_atomic(target, [&](atomic_sink& s) { s.write(text); });
}

}  // namespace staticgrad::io
