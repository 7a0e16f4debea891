// Data-parallel training across processes with LibTorch's c10d: a TCPStore for
// rendezvous and ProcessGroupGloo (CPU) or ProcessGroupNCCL (CUDA, when LibTorch
// was built with it) for the all-reduce. Configured as Kubernetes training jobs
// and torchrun configure workers: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE.
//
// Every rank builds the same model (same seed), rank 0's parameters are broadcast
// once, then gradients are averaged after every (accumulated) backward pass, so
// all ranks take identical optimiser steps. With the sharded sampler of the
// trainer, W ranks with per-rank batch B/W compute the gradient of the global
// batch B: the same training as one process with batch B (exactly so for models
// without BatchNorm, whose statistics are per-rank).
#ifndef SKINLESION_TRAIN_DISTRIBUTED_H_
#define SKINLESION_TRAIN_DISTRIBUTED_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "skinlesion/train/trainer.h"

namespace skinlesion::train {

struct DistributedOptions {
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int rank = 0;
  int world_size = 1;
  std::string backend = "gloo";  // gloo, nccl
  int timeout_s = 300;
};

// Reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE (and DIST_BACKEND) through
// `getenv`. NotFound when WORLD_SIZE is unset (not a distributed run);
// InvalidArgument for malformed or inconsistent values.
absl::StatusOr<DistributedOptions> DistributedOptionsFromEnv(
    const std::function<const char*(const char*)>& getenv);

// Joins the process group (blocks until all ranks arrived or the timeout).
absl::StatusOr<std::unique_ptr<GradientReducer>> CreateProcessGroupReducer(
    const DistributedOptions& options);

}  // namespace skinlesion::train

#endif  // SKINLESION_TRAIN_DISTRIBUTED_H_
