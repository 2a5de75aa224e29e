#pragma once
// A minimal fork-join `parallel_for` for the CPU reference kernels.
//
// Invariants:
//  - Tasks are the integers [0, n). Each task index is run exactly once.
//  - The caller guarantees that different tasks write disjoint memory, so the
//    result never depends on the number of threads or on scheduling: every
//    kernel here is bit-for-bit deterministic.
//  - Small jobs (few tasks or little work) run on the calling thread; spawning
//    threads for a 20-token gradient check would cost more than the work.
//  - An exception thrown by a task is rethrown on the calling thread (the first
//    one wins); the remaining tasks are still drained so every thread joins.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace staticgrad::cpu {

// Number of worker threads the CPU kernels may use. STATICGRAD_CPU_THREADS
// overrides std::thread::hardware_concurrency (which may report 0: then 1).
inline int cpu_threads() {
  static const int n = [] {
    if (const char* env = std::getenv("STATICGRAD_CPU_THREADS")) {
      const int v = std::atoi(env);
      if (v > 0) return v;
    }
    const unsigned hc = std::thread::hardware_concurrency();
    return hc == 0 ? 1 : static_cast<int>(hc);
  }();
  return n;
}

// Runs f(i) for i in [0, n). `work_per_task` is a rough flop count per task;
// below ~1 Mflop in total, threads are not worth their start-up cost (~10 us).
template <class F>
void parallel_for(std::int64_t n, double work_per_task, F&& f) {
  constexpr double min_parallel_work = 1e6;  // flops; see comment above
  const std::int64_t threads =
      std::min<std::int64_t>(cpu_threads(), n);
  if (threads <= 1 || work_per_task * static_cast<double>(n) < min_parallel_work) {
    for (std::int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::atomic<std::int64_t> next{0};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto worker = [&] {
    for (std::int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n;) {
      try {
        f(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(threads - 1));
  for (std::int64_t t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace staticgrad::cpu
