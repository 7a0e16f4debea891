#include "skinlesion/train/distributed.h"

#include <torch/torch.h>

#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "skinlesion/common/logging.h"

namespace skinlesion::train {
namespace {

class ProcessGroupReducer final : public GradientReducer {
 public:
  ProcessGroupReducer(c10::intrusive_ptr<c10d::Store> store,
                      c10::intrusive_ptr<c10d::ProcessGroup> group, int rank, int world)
      : store_(std::move(store)), group_(std::move(group)), rank_(rank), world_(world) {}

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  absl::Status AllReduceMean(std::vector<at::Tensor>& tensors) override {
    if (tensors.empty()) return absl::OkStatus();
    try {
      // One flat buffer: a single collective instead of one per parameter.
      std::vector<at::Tensor> flat_parts;
      for (const auto& t : tensors) flat_parts.push_back(t.reshape({-1}));
      std::vector<at::Tensor> flat = {torch::cat(flat_parts)};
      group_->allreduce(flat)->wait();
      flat[0].div_(world_);
      int64_t offset = 0;
      for (auto& t : tensors) {
        const int64_t n = t.numel();
        t.copy_(flat[0].narrow(0, offset, n).view_as(t));
        offset += n;
      }
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("all-reduce failed: ", e.what()));
    }
    return absl::OkStatus();
  }

  absl::Status Broadcast(std::vector<at::Tensor>& tensors) override {
    try {
      for (auto& t : tensors) {
        std::vector<at::Tensor> one = {t};
        group_->broadcast(one)->wait();
      }
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("broadcast failed: ", e.what()));
    }
    return absl::OkStatus();
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  int rank_, world_;
};

absl::StatusOr<int> ParseIntVar(const std::function<const char*(const char*)>& getenv,
                                const char* name) {
  const char* v = getenv(name);
  if (v == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, " is not set"));
  int out = 0;
  if (!absl::SimpleAtoi(v, &out)) {
    return absl::InvalidArgumentError(absl::StrCat(name, "='", v, "' is not an integer"));
  }
  return out;
}

}  // namespace

absl::StatusOr<DistributedOptions> DistributedOptionsFromEnv(
    const std::function<const char*(const char*)>& getenv) {
  if (getenv("WORLD_SIZE") == nullptr) return absl::NotFoundError("WORLD_SIZE is not set");
  DistributedOptions o;
  auto world = ParseIntVar(getenv, "WORLD_SIZE");
  auto rank = ParseIntVar(getenv, "RANK");
  auto port = ParseIntVar(getenv, "MASTER_PORT");
  if (!world.ok()) return world.status();
  if (!rank.ok()) return rank.status();
  if (!port.ok()) return port.status();
  const char* addr = getenv("MASTER_ADDR");
  if (addr == nullptr || *addr == '\0') return absl::InvalidArgumentError("MASTER_ADDR is not set");
  o.master_addr = addr;
  o.world_size = *world;
  o.rank = *rank;
  o.master_port = *port;
  if (const char* backend = getenv("DIST_BACKEND")) o.backend = backend;
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("RANK ", o.rank, " is outside WORLD_SIZE ", o.world_size));
  }
  if (o.master_port < 1 || o.master_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("MASTER_PORT ", o.master_port, " is not a port"));
  }
  if (o.backend != "gloo" && o.backend != "nccl") {
    return absl::InvalidArgumentError(absl::StrCat("unknown backend '", o.backend, "'"));
  }
  return o;
}

absl::StatusOr<std::unique_ptr<GradientReducer>> CreateProcessGroupReducer(
    const DistributedOptions& o) {
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(o.master_port);
    so.isServer = o.rank == 0;
    so.numWorkers = o.world_size;
    so.waitWorkers = true;
    so.timeout = std::chrono::seconds(o.timeout_s);
    auto store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
    c10::intrusive_ptr<c10d::ProcessGroup> group;
    if (o.backend == "nccl") {
#ifdef USE_C10D_NCCL
      group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o.rank, o.world_size);
#else
      return absl::FailedPreconditionError("this LibTorch has no NCCL; use backend gloo");
#endif
    } else {
      auto options = c10d::ProcessGroupGloo::Options::create();
      options->timeout = std::chrono::seconds(o.timeout_s);
      // On loopback every rank binds to the master's address; across machines each
      // binds to the address of its own hostname.
      const bool loopback = o.master_addr == "localhost" || o.master_addr.rfind("127.", 0) == 0;
      options->devices.push_back(
          loopback ? c10d::ProcessGroupGloo::createDeviceForHostname(o.master_addr)
                   : c10d::ProcessGroupGloo::createDefaultDevice());
      group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.world_size, options);
    }
    SL_LOG(INFO) << "joined process group: rank " << o.rank << " of " << o.world_size << " ("
                 << o.backend << ", " << o.master_addr << ":" << o.master_port << ")";
    return std::unique_ptr<GradientReducer>(
        new ProcessGroupReducer(store, group, o.rank, o.world_size));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot join the process group at ", o.master_addr,
                                               ":", o.master_port, ": ", e.what()));
  }
}

}  // namespace skinlesion::train
