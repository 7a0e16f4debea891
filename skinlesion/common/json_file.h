// The JSON object in a file: the one read-and-parse of the project's JSON files
// (configs, manifests, metrics, cv recipes, registry aliases).
//
//   SL_ASSIGN_OR_RETURN(const nlohmann::json recipe, ReadJsonObject(path, 1 << 20));
//
// Errors: ReadFileToString's (NotFound for a missing or unreadable file,
// InvalidArgument for one over `max_bytes`, DataLoss for a short read), then
// "<path> is not valid JSON" and "<path> is not a JSON object" with `bad_content`'s
// code: DataLoss (the default) for files the project wrote, InvalidArgument for a
// file a user names (a config). It never throws.
#ifndef SKINLESION_COMMON_JSON_FILE_H_
#define SKINLESION_COMMON_JSON_FILE_H_

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace skinlesion {

absl::StatusOr<nlohmann::json> ReadJsonObject(
    const std::string& path, size_t max_bytes,
    absl::StatusCode bad_content = absl::StatusCode::kDataLoss);

// The keys of object `now` for which `compared(key)` holds and whose value differs from
// `before`'s (null where `before` lacks the key), each as "key <before> -> <now>" in
// JSON (e.g. `lr 0.001 -> 0.0003`): what a resumed run would change.
std::vector<std::string> ChangedKeys(const nlohmann::json& before, const nlohmann::json& now,
                                     const std::function<bool(const std::string&)>& compared);

}  // namespace skinlesion

#endif  // SKINLESION_COMMON_JSON_FILE_H_
