// Fuzzes the plain labels CSV (image,label[,lesion_id|patient_id,age,sex,...]) and the
// format detection of a header: every accepted row has an id, a known label, a group
// and a sane age; every rejection is InvalidArgument; rows of a skipped label are
// counted, never returned.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "fuzz/require.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/data/catalogue.h"
#include "skinlesion/data/dataset.h"

using skinlesion::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace skinlesion::data;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto table = ParseTable(text, "fuzz");
  if (table.ok()) {
    auto format = CsvFormatOf(table->front().fields);
    Require(format.ok() || format.status().code() == absl::StatusCode::kInvalidArgument);
  }
  std::map<std::string, int> skipped;
  auto rows = ParsePlainCsv(text, "fuzz", {"scc", "unk"}, &skipped);
  if (!rows.ok()) {
    Require(rows.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  absl::flat_hash_set<std::string> ids;
  for (const Sample& s : rows->rows) {
    Require(!s.image_id.empty() && !s.lesion_id.empty());
    Require(s.label >= 0 && s.label < rows->classes.size());
    Require(!s.age.has_value() || (*s.age >= 0 && *s.age <= 130));
    Require(ids.insert(s.image_id).second);
  }
  for (const auto& [label, n] : skipped) Require((label == "scc" || label == "unk") && n > 0);
  return 0;
}
