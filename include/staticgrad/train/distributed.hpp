#pragma once
// Data-parallel training, the host part (plain C++ that nvcc's host pass
// also accepts): which rank this process is, the communicator the training
// loop and the backends talk to, and the exchange of the NCCL unique id.
//
//   launcher environment (torchrun, `finetune --gpus N`):
//     RANK, WORLD_SIZE, LOCAL_RANK (default RANK), MASTER_ADDR + MASTER_PORT or STATICGRAD_NCCL_ID_FILE
//   --> dist_env (dist_env_from) --> rank 0 makes the id, serves it (TCP) or writes it (file);
//       every other rank fetches it (exchange_id) --> the NCCL communicator (nccl_communicator.cuh)
//
// The loop (loop.hpp) uses communicator::all_reduce_host for its scalars
// (loss sum, eval sums, the stop flag); the CUDA backend reduces the LoRA
// gradients on the device (all_reduce_device); the CPU backend reduces them
// on the host (all_reduce_host_f32; used by the in-process test group only).
// docs/multi_gpu.md.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <thread>

#include "staticgrad/core/error.hpp"

namespace staticgrad::train {

// Where this process stands in a multi-process run.
struct dist_env {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr;  // MASTER_ADDR (with master_port: the TCP id exchange)
  int master_port = 0;      // MASTER_PORT
  std::string id_file;      // STATICGRAD_NCCL_ID_FILE (wins over MASTER_ADDR)
  double timeout_s = 600;   // STATICGRAD_NCCL_TIMEOUT: id exchange, init and every collective
};

using env_getter = std::function<const char*(const char*)>;
inline const char* process_env(const char* name) { return std::getenv(name); }

namespace dist_detail {
// A whole decimal integer in [lo, hi], else an error naming the variable.
inline long long env_int(const env_getter& get, const char* name, long long lo, long long hi) {
  const char* s = get(name);
  errno = 0;
  char* end = nullptr;
  const long long v = s ? std::strtoll(s, &end, 10) : 0;
  require(s && *s && end && *end == '\0' && errno == 0 && v >= lo && v <= hi,
          std::string("got \"") + (s ? s : "") + "\"; expected a whole number in [" + std::to_string(lo) + ", " +
              std::to_string(hi) + "]",
          {"", std::string("environment variable ") + name, {}});
  return v;
}
}  // namespace dist_detail

// The launcher's environment: nullopt when WORLD_SIZE is not set (a plain,
// single-process run). Throws staticgrad::error naming the variable on a bad value.
inline std::optional<dist_env> dist_env_from(const env_getter& get = process_env) {
  using dist_detail::env_int;
  if (!get("WORLD_SIZE")) return std::nullopt;
  dist_env e;
  e.world = static_cast<int>(env_int(get, "WORLD_SIZE", 1, 1 << 16));
  require(get("RANK") != nullptr, "WORLD_SIZE is set but RANK is not (a launcher sets both)",
          {"", "environment variable RANK", {}});
  e.rank = static_cast<int>(env_int(get, "RANK", 0, e.world - 1));
  e.local_rank = get("LOCAL_RANK") ? static_cast<int>(env_int(get, "LOCAL_RANK", 0, e.world - 1)) : e.rank;
  if (const char* f = get("STATICGRAD_NCCL_ID_FILE"); f && *f) e.id_file = f;
  if (const char* a = get("MASTER_ADDR"); a && *a) e.master_addr = a;
  if (get("MASTER_PORT")) e.master_port = static_cast<int>(env_int(get, "MASTER_PORT", 1, 65535));
  if (const char* t = get("STATICGRAD_NCCL_TIMEOUT")) {
    char* end = nullptr;
    e.timeout_s = std::strtod(t, &end);
    require(*t && end && *end == '\0' && e.timeout_s > 0,
            std::string("got \"") + t + "\"; expected a positive number of seconds",
            {"", "environment variable STATICGRAD_NCCL_TIMEOUT", {}});
  }
  require(e.world == 1 || !e.id_file.empty() || (!e.master_addr.empty() && e.master_port > 0),
          "WORLD_SIZE " + std::to_string(e.world) +
              " needs a way to share the NCCL id: STATICGRAD_NCCL_ID_FILE, or MASTER_ADDR and MASTER_PORT",
          {"", "environment variable MASTER_ADDR", {}});
  return e;
}

enum class reduce_op { sum, max };

// What the loop and the backends need from the group of ranks. Every call is
// collective: every rank makes the same calls in the same order.
class communicator {
 public:
  virtual ~communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // Small host values (loss sums, flags), reduced in place. `what` names the operation in errors.
  virtual void all_reduce_host(std::span<double> v, reduce_op op, const char* what) = 0;
  // A host f32 array, summed in place (the CPU backend's gradients).
  virtual void all_reduce_host_f32(std::span<float> v, const char* what) = 0;
  // A device f32 array, summed in place once the work queued so far on
  // `cuda_stream` (a cudaStream_t) is done; it runs on the communicator's own
  // stream, overlapping what is queued on `cuda_stream` afterwards.
  virtual void all_reduce_device(float* v, std::size_t n, void* cuda_stream, const char* what) {
    (void)v, (void)n, (void)cuda_stream;
    throw error(std::string(what) + ": this communicator has no device all-reduce");
  }
  // Makes `cuda_stream` wait for every device reduction queued so far (none: nothing to wait for).
  virtual void device_wait(void* cuda_stream) { (void)cuda_stream; }
};

// ---- the NCCL unique id: 128 opaque bytes from rank 0 to every rank ---------------
inline constexpr std::size_t nccl_id_bytes = 128;
using id_blob = std::array<char, nccl_id_bytes>;

// Rank 0: the file appears whole (a temporary next to it, then rename).
inline void publish_id_file(const std::filesystem::path& file, const id_blob& id) {
  const auto tmp = file.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(id.data(), static_cast<std::streamsize>(id.size()));
    require(static_cast<bool>(f), "cannot write the NCCL id file", {tmp, "STATICGRAD_NCCL_ID_FILE", {}});
  }
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  require(!ec, "cannot rename the NCCL id file into place: " + ec.message(), {file.string(), "STATICGRAD_NCCL_ID_FILE", {}});
}

// Other ranks: poll until the file holds the whole id.
inline id_blob wait_id_file(const std::filesystem::path& file, double timeout_s) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    std::error_code ec;
    if (std::filesystem::file_size(file, ec) == nccl_id_bytes && !ec) {
      id_blob id{};
      std::ifstream f(file, std::ios::binary);
      if (f.read(id.data(), static_cast<std::streamsize>(id.size()))) return id;
    }
    require(std::chrono::steady_clock::now() < end,
            "rank 0 did not write the NCCL id within " + std::to_string(timeout_s) + " s (STATICGRAD_NCCL_TIMEOUT)",
            {file.string(), "STATICGRAD_NCCL_ID_FILE", {}});
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

namespace dist_detail {
class fd_guard {
 public:
  explicit fd_guard(int fd) : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};
inline std::string where(const std::string& addr, int port) { return addr + ":" + std::to_string(port); }
}  // namespace dist_detail

// Rank 0: listen on `port` (every interface) and send the id to `clients` connections.
inline void serve_id_tcp(int port, const id_blob& id, int clients, double timeout_s) {
  using dist_detail::fd_guard;
  const std::string ctx = "MASTER_PORT " + std::to_string(port);
  fd_guard s(::socket(AF_INET, SOCK_STREAM, 0));
  require(s.get() >= 0, std::string("socket: ") + std::strerror(errno), {"", ctx, {}});
  const int one = 1;
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  require(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 && ::listen(s.get(), clients) == 0,
          std::string("rank 0 cannot listen for the other ranks: ") + std::strerror(errno), {"", ctx, {}});
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (int served = 0; served < clients;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    pollfd p{s.get(), POLLIN, 0};
    require(left.count() > 0 && ::poll(&p, 1, static_cast<int>(left.count())) > 0,
            "rank 0: only " + std::to_string(served) + " of " + std::to_string(clients) +
                " other ranks connected for the NCCL id within the timeout (STATICGRAD_NCCL_TIMEOUT)",
            {"", ctx, {}});
    fd_guard c(::accept(s.get(), nullptr, nullptr));
    if (c.get() < 0) continue;
    std::size_t sent = 0;
    while (sent < id.size()) {
      const ssize_t n = ::send(c.get(), id.data() + sent, id.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<std::size_t>(n);
    }
    served += sent == id.size();
  }
}

// Other ranks: connect to MASTER_ADDR:MASTER_PORT (retrying while rank 0 starts) and read the id.
inline id_blob fetch_id_tcp(const std::string& addr, int port, double timeout_s) {
  using dist_detail::fd_guard;
  const std::string ctx = "MASTER_ADDR " + dist_detail::where(addr, port);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  std::string last = "no attempt";
  while (std::chrono::steady_clock::now() < end) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    const int g = ::getaddrinfo(addr.c_str(), std::to_string(port).c_str(), &hints, &res);
    require(g == 0, std::string("cannot resolve the address: ") + ::gai_strerror(g), {"", ctx, {}});
    fd_guard s(::socket(AF_INET, SOCK_STREAM, 0));
    const bool ok = s.get() >= 0 && ::connect(s.get(), res->ai_addr, res->ai_addrlen) == 0;
    last = std::strerror(errno);
    ::freeaddrinfo(res);
    if (ok) {
      id_blob id{};
      std::size_t got = 0;
      while (got < id.size()) {
        const ssize_t n = ::recv(s.get(), id.data() + got, id.size() - got, 0);
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
      }
      if (got == id.size()) return id;
      last = "the connection closed after " + std::to_string(got) + " of " + std::to_string(id.size()) + " bytes";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw error("could not fetch the NCCL id from rank 0 within " + std::to_string(timeout_s) +
                  " s (STATICGRAD_NCCL_TIMEOUT); last error: " + last,
              {"", ctx, {}});
}

// Every rank: rank 0 calls make_id() and shares the result; the others receive it.
inline id_blob exchange_id(const dist_env& e, const std::function<id_blob()>& make_id) {
  if (e.rank == 0) {
    const id_blob id = make_id();
    if (e.world == 1) return id;
    if (!e.id_file.empty())
      publish_id_file(e.id_file, id);
    else
      serve_id_tcp(e.master_port, id, e.world - 1, e.timeout_s);
    return id;
  }
  return e.id_file.empty() ? fetch_id_tcp(e.master_addr, e.master_port, e.timeout_s)
                           : wait_id_file(e.id_file, e.timeout_s);
}

// The micro-batches of one optimizer step that rank r runs: m in [0, total) with m % world == rank.
inline bool runs_micro_batch(std::int64_t m, int rank, int world) { return m % world == rank; }

}  // namespace staticgrad::train
