// Keeps freed tensor memory in the process instead of handing it back to the kernel.
//
// LibTorch allocates CPU tensors with plain malloc. glibc's defaults serve large
// blocks with mmap (the threshold adapts upwards from 128 KiB) and return freed
// memory at the top of a heap to the kernel once more than 128 KiB is free, so every
// forward pass maps its activations afresh, and every first write to each 4 KiB page
// is a page fault that the kernel answers with a zeroed page. On the project's
// 2-vCPU VM (a hypervisor makes faults dearer still) that cost more than the bf16
// arithmetic itself: the inference server computed ResNet-50 batches of 8 at 20
// images/s with the defaults and at 59 with large blocks kept; a bf16 ResNet-50
// training step ran 7.5 -> 16.3 images/s (docs/performance.md, "Memory").
//
// TuneAllocatorForTensors() sets, once, before the first tensor exists:
//   M_MMAP_THRESHOLD 32 MiB (glibc's largest; blocks below it come from the heaps and
//                    are reused), M_TRIM_THRESHOLD 1 GiB (free memory stays mapped),
//   M_ARENA_MAX 1    (every thread allocates from the main heap, where the trim
//                    threshold holds).
// The two thresholds are needed together: either alone left most of the faults. The
// single arena matters in servers: gRPC's synchronous server starts and ends threads
// as load comes and goes, glibc gives threads their own arenas of 64 MiB heaps, and
// those heaps were mapped afresh and deleted whole as the threads that shared them
// came and went (19 new heaps in 3 s under 8 clients); the batch worker's
// activations were faulted in again and the server computed ResNet-50 bf16 batches
// at 0.64x of the raw forward, 0.99x with one arena. Small blocks still come from
// each thread's cache (tcache) without the arena's lock. The price is resident
// memory: the process keeps its high-water mark (ResNet-50 serving at batch 8: 555
// instead of 254 MB resident). It does nothing, and says so, when the environment
// already tunes malloc (GLIBC_TUNABLES with glibc.malloc, MALLOC_MMAP_THRESHOLD_,
// MALLOC_TRIM_THRESHOLD_ or MALLOC_ARENA_MAX), when SKINLESION_MALLOC_DEFAULTS=1, or off glibc.
// LibTorch-free.
#ifndef SKINLESION_COMMON_ALLOCATOR_H_
#define SKINLESION_COMMON_ALLOCATOR_H_

#include <cstddef>
#include <string>

namespace skinlesion {

inline constexpr size_t kTensorMmapThreshold = size_t{32} << 20;
inline constexpr size_t kTensorTrimThreshold = size_t{1} << 30;
inline constexpr int kTensorArenas = 1;

struct AllocatorTuning {
  bool applied = false;
  std::string description;  // One line for the log: what was set, or why not.
};

// Idempotent; thread-safe (the first call decides). Call at the top of main().
const AllocatorTuning& TuneAllocatorForTensors();

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_ALLOCATOR_H_
