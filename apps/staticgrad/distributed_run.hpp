#pragma once
// Data-parallel `staticgrad finetune` (docs/multi_gpu.md): the NCCL
// communicator of a rank (finetune_nccl.cu, or finetune_nonccl.cpp in a build
// without NCCL) and the `--gpus N` parent that starts the N ranks
// (launch_ranks.cpp).
#include <memory>

#include "staticgrad/train/distributed.hpp"

namespace staticgrad::cli {

// Whether this build has NCCL (STATICGRAD_NCCL: nccl.h and libnccl found at configure time).
bool have_nccl();

// This process's rank of the group the launcher environment describes; sets
// the CUDA device to LOCAL_RANK. Throws staticgrad::error without NCCL.
std::unique_ptr<train::communicator> make_nccl_communicator(const train::dist_env& e);

// `finetune --gpus N`: runs this program N times (the same arguments without
// --gpus; RANK, WORLD_SIZE, LOCAL_RANK and an NCCL id file in the
// environment), waits for all, and stops the others when one fails. Returns
// the exit status: 0; 130 / 143 when the ranks stopped on SIGINT / SIGTERM
// (rank 0 saved a checkpoint); 1 when a rank failed.
int launch_ranks(int gpus);

// Set in the ranks' environment: a rank ignores --gpus (also from --config).
inline constexpr const char* rank_of_gpus_env = "STATICGRAD_GPUS_CHILD";

}  // namespace staticgrad::cli
