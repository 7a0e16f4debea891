// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
//   8 bytes little-endian u64 N | N bytes JSON header | raw little-endian data
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the data section) plus an optional "__metadata__" object of
// strings.
//
// ReadSafetensors memory-maps the file (private, copy-on-write): tensors whose data
// is aligned for their type point into the mapping, which lives as long as any of
// them; the rest are copied. Every malformed file (short header, bad JSON, unknown
// dtype, offsets outside the data, overlapping tensors, byte length not matching
// the shape) is an InvalidArgument error naming the problem; it never crashes.
#ifndef SKINLESION_MODELS_SAFETENSORS_H_
#define SKINLESION_MODELS_SAFETENSORS_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "skinlesion/models/classifier.h"

namespace skinlesion::models {

struct Safetensors {
  TensorMap tensors;
  std::map<std::string, std::string> metadata;
};

// Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
absl::StatusOr<Safetensors> ReadSafetensors(const std::string& path);
// Parses bytes already in memory (the tensors are copies).
absl::StatusOr<Safetensors> ParseSafetensors(absl::string_view bytes);

// Tensors are written contiguous, from the CPU, keys sorted; the header is
// space-padded to a multiple of 8 bytes. The file is written atomically.
absl::StatusOr<std::string> SerializeSafetensors(const TensorMap& tensors,
                                                 const std::map<std::string, std::string>& metadata = {});
absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace skinlesion::models

#endif  // SKINLESION_MODELS_SAFETENSORS_H_
