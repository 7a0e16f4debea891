// Fuzzes the HAM10000 metadata parser (7- and 8-column variants) and what is built
// on its rows: the summary, a lesion-disjoint split, the split file round trip and
// Apply(). Whatever parses must satisfy the parser's documented guarantees.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz/require.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "skinlesion/common/classes.h"
#include "skinlesion/data/catalogue.h"
#include "skinlesion/data/ham10000.h"
#include "skinlesion/data/split.h"

using skinlesion::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace skinlesion::data;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto rows = ParseHam10000Metadata(text);
  if (!rows.ok()) {
    Require(rows.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  absl::flat_hash_set<std::string> ids;
  for (const Sample& s : *rows) {
    Require(!s.image_id.empty() && !s.lesion_id.empty() && s.path.empty());
    Require(s.label >= 0 && s.label < skinlesion::LabelSet::Ham10000().size());
    Require(!s.age || (*s.age >= 0 && *s.age <= 130));
    Require(ids.insert(s.image_id).second);
  }
  const Catalogue catalogue = CatalogueWithoutImages(*std::move(rows));
  Require(!Summary(catalogue).empty());
  if (catalogue.samples.empty()) return 0;

  auto split = MakeSplit(catalogue, {.seed = size});
  Require(split.ok());
  Require(split->entries().size() == catalogue.samples.size());
  auto parsed = ParseSplit(split->ToCsv());
  Require(parsed.ok() && parsed->Digest() == split->Digest());
  size_t total = 0;
  for (const std::string& partition : split->Partitions()) {
    auto samples = Apply(*parsed, catalogue, partition);
    Require(samples.ok());
    total += samples->size();
  }
  Require(total == catalogue.samples.size());
  return 0;
}
