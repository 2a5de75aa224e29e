// `finetune` as one rank of a data-parallel group: the NCCL communicator
// (include/staticgrad/train/nccl_communicator.cuh). Built with STATICGRAD_NCCL.
#include "distributed_run.hpp"
#include "staticgrad/train/nccl_communicator.cuh"

namespace staticgrad::cli {

bool have_nccl() { return true; }

std::unique_ptr<train::communicator> make_nccl_communicator(const train::dist_env& e) {
  return std::make_unique<train::nccl_communicator>(e);
}

}  // namespace staticgrad::cli
