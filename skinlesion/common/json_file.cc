#include "skinlesion/common/json_file.h"

#include "absl/strings/str_cat.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/status.h"

namespace skinlesion {

absl::StatusOr<nlohmann::json> ReadJsonObject(const std::string& path, size_t max_bytes,
                                              absl::StatusCode bad_content) {
  SL_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path, max_bytes));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::Status(bad_content, absl::StrCat(path, " is not valid JSON"));
  if (!j.is_object()) return absl::Status(bad_content, absl::StrCat(path, " is not a JSON object"));
  return j;
}

std::vector<std::string> ChangedKeys(const nlohmann::json& before, const nlohmann::json& now,
                                     const std::function<bool(const std::string&)>& compared) {
  std::vector<std::string> changed;
  for (const auto& [key, value] : now.items()) {
    if (!compared(key)) continue;
    const nlohmann::json was = before.contains(key) ? before[key] : nlohmann::json();
    if (was != value) changed.push_back(absl::StrCat(key, " ", was.dump(), " -> ", value.dump()));
  }
  return changed;
}

}  // namespace skinlesion
