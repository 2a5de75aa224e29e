// A build without NCCL (STATICGRAD_NCCL OFF: nccl.h or libnccl not found at
// configure time, or no CUDA): a multi-rank run is refused with the reason.
#include "distributed_run.hpp"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cli {

bool have_nccl() { return false; }

std::unique_ptr<train::communicator> make_nccl_communicator(const train::dist_env& e) {
  throw error("rank " + std::to_string(e.rank) + " of " + std::to_string(e.world) +
                  ": data-parallel training needs NCCL, which was not found when this build was configured "
                  "(nccl.h and libnccl in the CUDA toolkit; STATICGRAD_NCCL is OFF)",
              {"", "environment variable WORLD_SIZE", {}});
}

}  // namespace staticgrad::cli
