#pragma once
// train::communicator over NCCL (one process per GPU; distributed.hpp has
// the host part). Built only with STATICGRAD_NCCL (nccl.h and libnccl of
// the CUDA toolkit).
//
//   dist_env --setenv NCCL_NVLS_ENABLE=0 (unless set), cudaSetDevice(LOCAL_RANK)
//     --exchange_id (rank 0: ncclGetUniqueId)--> ncclCommInitRankConfig(blocking = 0)
//   all_reduce_device(v, n, after): an event on `after`, the communicator's
//     stream waits on it, ncclAllReduce(sum, in place) there: it overlaps the
//     work queued on `after` later (the backward of earlier layers);
//   device_wait(stream): `stream` waits for every reduction queued so far;
//   all_reduce_host: a few doubles through a device buffer, waited for here.
// Failure handling: the communicator is non-blocking; a watchdog thread polls
// ncclCommGetAsyncError and the completion of every queued reduction; an
// asynchronous error, or a reduction (or a host wait) older than
// STATICGRAD_NCCL_TIMEOUT seconds, prints "rank R: NCCL <operation> ..." to
// stderr, aborts the communicator (ncclCommAbort) and ends the process with
// exit status 1 (a peer that died or hangs must not hang this rank; the
// `finetune --gpus` parent then stops the others).
#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/core/error.hpp"
#include "staticgrad/train/distributed.hpp"

namespace staticgrad::train {

class nccl_communicator final : public communicator {
 public:
  explicit nccl_communicator(const dist_env& e) : env_(e) {
    ::setenv("NCCL_NVLS_ENABLE", "0", 0);  // NVLink multicast stays off (the lent machines' rule)
    int n = 0;
    const cudaError_t ce = cudaGetDeviceCount(&n);
    require(ce == cudaSuccess, "rank " + std::to_string(e.rank) + ": no usable CUDA device (" +
                                   std::string(cudaGetErrorString(ce)) + ")",
            {"", "environment variable LOCAL_RANK", {}});
    require(e.local_rank < n,
            "rank " + std::to_string(e.rank) + ": LOCAL_RANK " + std::to_string(e.local_rank) + " but only " +
                std::to_string(n) + " CUDA devices are visible (CUDA_VISIBLE_DEVICES, --gpus)",
            {"", "environment variable LOCAL_RANK", {}});
    SG_CUDA_CHECK(cudaSetDevice(e.local_rank));
    const id_blob blob = exchange_id(e, [&] {
      ncclUniqueId id;
      check(ncclGetUniqueId(&id), "ncclGetUniqueId");
      id_blob b{};
      static_assert(sizeof(id) == nccl_id_bytes, "ncclUniqueId is 128 bytes");
      std::memcpy(b.data(), &id, sizeof(id));
      return b;
    });
    ncclUniqueId id;
    std::memcpy(&id, blob.data(), sizeof(id));
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;  // calls return at once; completion and errors through ncclCommGetAsyncError
    check(ncclCommInitRankConfig(&comm_, e.world, id, e.rank, &cfg), "ncclCommInitRankConfig");
    SG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    SG_CUDA_CHECK(cudaMalloc(&scratch_, kScratch * sizeof(double)));
    watchdog_ = std::thread([this] { watch(); });
  }
  ~nccl_communicator() override {
    stop_.store(true);
    if (watchdog_.joinable()) watchdog_.join();
    if (comm_) {
      cudaStreamSynchronize(stream_);
      ncclCommFinalize(comm_);
      ncclResult_t r = ncclInProgress;
      while (r == ncclInProgress && ncclCommGetAsyncError(comm_, &r) == ncclSuccess) std::this_thread::yield();
      ncclCommDestroy(comm_);
    }
    for (auto& p : pending_) cudaEventDestroy(p.done);
    if (scratch_) cudaFree(scratch_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  nccl_communicator(const nccl_communicator&) = delete;
  nccl_communicator& operator=(const nccl_communicator&) = delete;

  int rank() const override { return env_.rank; }
  int world() const override { return env_.world; }

  void all_reduce_device(float* v, std::size_t n, void* after, const char* what) override {
    cudaEvent_t ready = nullptr;
    SG_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    SG_CUDA_CHECK(cudaEventRecord(ready, static_cast<cudaStream_t>(after)));
    SG_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    SG_CUDA_CHECK(cudaEventDestroy(ready));  // released once it has completed
    check(ncclAllReduce(v, v, n, ncclFloat32, ncclSum, comm_, stream_), what);
    track(what);
  }
  void device_wait(void* stream) override {
    cudaEvent_t done = nullptr;
    SG_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    SG_CUDA_CHECK(cudaEventRecord(done, stream_));
    SG_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), done, 0));
    SG_CUDA_CHECK(cudaEventDestroy(done));
  }

  void all_reduce_host(std::span<double> v, reduce_op op, const char* what) override {
    require(v.size() <= kScratch, "nccl_communicator: too many host values in one reduction");
    SG_CUDA_CHECK(cudaMemcpyAsync(scratch_, v.data(), v.size_bytes(), cudaMemcpyHostToDevice, stream_));
    check(ncclAllReduce(scratch_, scratch_, v.size(), ncclFloat64, op == reduce_op::max ? ncclMax : ncclSum, comm_,
                        stream_),
          what);
    SG_CUDA_CHECK(cudaMemcpyAsync(v.data(), scratch_, v.size_bytes(), cudaMemcpyDeviceToHost, stream_));
    track(what);
    wait_stream(what);
  }
  void all_reduce_host_f32(std::span<float>, const char* what) override {
    throw error(std::string(what) + ": the NCCL communicator reduces gradients on the device only");
  }

 private:
  static constexpr std::size_t kScratch = 16;
  struct pending {
    cudaEvent_t done;
    const char* what;
    std::chrono::steady_clock::time_point since;
  };

  [[noreturn]] void fail(const std::string& what, const std::string& why) {
    std::lock_guard lk(fail_mu_);
    std::fprintf(stderr, "staticgrad: error: rank %d of %d: NCCL %s %s; aborting the communicator\n", env_.rank,
                 env_.world, what.c_str(), why.c_str());
    std::fflush(stderr);
    if (comm_) ncclCommAbort(comm_);
    std::_Exit(1);
  }

  // A non-blocking call: wait until it is no longer in progress (bounded by the timeout).
  void check(ncclResult_t r, const char* what) {
    const auto t0 = std::chrono::steady_clock::now();
    while (r == ncclInProgress) {
      if (!comm_ || ncclCommGetAsyncError(comm_, &r) != ncclSuccess) break;
      if (seconds_since(t0) > env_.timeout_s)
        fail(what, "did not complete within " + std::to_string(env_.timeout_s) + " s (STATICGRAD_NCCL_TIMEOUT)");
      if (r == ncclInProgress) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    if (r != ncclSuccess) fail(what, std::string("failed: ") + ncclGetErrorString(r) + " (" + ncclGetLastError(comm_) + ")");
  }

  // The reduction just queued on stream_: the watchdog follows it.
  void track(const char* what) {
    cudaEvent_t done = nullptr;
    SG_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    SG_CUDA_CHECK(cudaEventRecord(done, stream_));
    std::lock_guard lk(mu_);
    pending_.push_back({done, what, std::chrono::steady_clock::now()});
  }

  // The host waits for stream_ by polling, so that the timeout holds here too.
  void wait_stream(const char* what) {
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      const cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) fail(what, std::string("failed on the device: ") + cudaGetErrorString(e));
      if (seconds_since(t0) > env_.timeout_s)
        fail(what, "did not complete within " + std::to_string(env_.timeout_s) + " s (STATICGRAD_NCCL_TIMEOUT)");
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  void watch() {
    cudaSetDevice(env_.local_rank);
    while (!stop_.load()) {
      ncclResult_t r = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &r) == ncclSuccess && r != ncclSuccess && r != ncclInProgress) {
        std::lock_guard lk(mu_);
        fail(pending_.empty() ? "communicator" : pending_.front().what,
             std::string("reported an asynchronous error: ") + ncclGetErrorString(r));
      }
      {
        std::lock_guard lk(mu_);
        while (!pending_.empty()) {
          const cudaError_t q = cudaEventQuery(pending_.front().done);
          if (q == cudaErrorNotReady) {
            if (seconds_since(pending_.front().since) > env_.timeout_s)
              fail(pending_.front().what, "did not complete within " + std::to_string(env_.timeout_s) +
                                              " s (STATICGRAD_NCCL_TIMEOUT; a rank died or hangs)");
            break;
          }
          cudaEventDestroy(pending_.front().done);
          pending_.pop_front();
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }

  dist_env env_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  double* scratch_ = nullptr;
  std::mutex mu_, fail_mu_;
  std::deque<pending> pending_;
  std::atomic<bool> stop_{false};
  std::thread watchdog_;
};

}  // namespace staticgrad::train
