#pragma once
// N ranks of a data-parallel group as threads of one process (the tests'
// stand-in for NCCL): every all-reduce waits until all N ranks arrived, sums
// (or takes the max) in rank order 0, 1, ..., N-1, and hands every rank the
// same result. local_group(N).rank(r) is rank r's train::communicator.
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "staticgrad/train/distributed.hpp"

namespace sgtest {

class local_group {
 public:
  explicit local_group(int world) : world_(world), parts_(static_cast<std::size_t>(world)) {
    for (int r = 0; r < world; ++r) ranks_.push_back(std::make_unique<member>(*this, r));
  }
  staticgrad::train::communicator& rank(int r) { return *ranks_[static_cast<std::size_t>(r)]; }
  int reductions() const { return reductions_; }  // completed collective calls

 private:
  class member final : public staticgrad::train::communicator {
   public:
    member(local_group& g, int r) : g_(g), r_(r) {}
    int rank() const override { return r_; }
    int world() const override { return g_.world_; }
    void all_reduce_host(std::span<double> v, staticgrad::train::reduce_op op, const char*) override {
      g_.reduce(r_, v, op);
    }
    void all_reduce_host_f32(std::span<float> v, const char*) override {
      g_.reduce(r_, v, staticgrad::train::reduce_op::sum);
    }

   private:
    local_group& g_;
    int r_;
  };

  template <class T>
  void reduce(int r, std::span<T> v, staticgrad::train::reduce_op op) {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return !releasing_; });  // the previous call has been handed out
    parts_[static_cast<std::size_t>(r)] = {v.data(), v.size()};
    if (++arrived_ == world_) {
      std::vector<T> acc(v.size());
      for (int q = 0; q < world_; ++q) {
        const T* p = static_cast<const T*>(parts_[static_cast<std::size_t>(q)].data);
        for (std::size_t i = 0; i < v.size(); ++i)
          acc[i] = q == 0 ? p[i] : op == staticgrad::train::reduce_op::max ? std::max(acc[i], p[i]) : acc[i] + p[i];
      }
      for (int q = 0; q < world_; ++q)
        std::copy(acc.begin(), acc.end(), static_cast<T*>(parts_[static_cast<std::size_t>(q)].data));
      releasing_ = true;
      ++reductions_;
      cv_.notify_all();
    } else {
      const int gen = reductions_;
      cv_.wait(lk, [&] { return reductions_ != gen; });
    }
    if (--arrived_ == 0) {
      releasing_ = false;
      cv_.notify_all();
    }
  }

  struct part {
    void* data = nullptr;
    std::size_t n = 0;
  };
  int world_;
  std::vector<part> parts_;
  std::vector<std::unique_ptr<member>> ranks_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0, reductions_ = 0;
  bool releasing_ = false;
};

}  // namespace sgtest
