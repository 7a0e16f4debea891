// SHA-256 digests (OpenSSL), hex encoded, for provenance: split files, registry
// files, datasets.
#ifndef SKINLESION_COMMON_HASH_H_
#define SKINLESION_COMMON_HASH_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace skinlesion {

// Lower-case hex SHA-256 of `data`.
std::string Sha256Hex(absl::string_view data);

// Lower-case hex SHA-256 of a file's content, streamed.
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_HASH_H_
