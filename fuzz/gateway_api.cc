// Fuzzes the gateway's parsers of request data (services/gateway/api.h): the
// query parameters of POST /api/v1/predictions and GET /api/v1/jobs, the job config
// JSON -> TrainingConfig conversion, the alias body, and the JSON of a prediction
// built from an arbitrary ClassifyResponse (its strings need not be UTF-8).
//
// Input: "QUERY\nBODY": QUERY is split like a query string (k=v&k=v, no decoding),
// BODY is the JSON document; the whole input is also parsed as a ClassifyResponse.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "fuzz/require.h"
#include "nlohmann/json.hpp"
#include "services/gateway/api.h"
#include "skinlesion/common/classes.h"

using skinlesion::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace skinlesion::gateway;
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t newline = input.find('\n');
  const std::string query = input.substr(0, newline);
  const std::string body = newline == std::string::npos ? "" : input.substr(newline + 1);

  QueryParams params;
  for (absl::string_view pair : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    const size_t eq = pair.find('=');
    params.emplace(std::string(pair.substr(0, eq)),
                   eq == absl::string_view::npos ? "" : std::string(pair.substr(eq + 1)));
  }
  auto prediction = ParsePredictionQuery(params);
  if (prediction.ok()) {
    Require(prediction->top_k >= 1 && prediction->top_k <= skinlesion::kMaxClasses);
    Require(prediction->model.empty() || IsValidName(prediction->model));
  } else {
    Require(prediction.status().code() == absl::StatusCode::kInvalidArgument);
  }
  auto states = ParseJobsQuery(params);
  Require(states.ok() || states.status().code() == absl::StatusCode::kInvalidArgument);

  auto config = JobConfigFromJson(body);
  if (config.ok()) {
    if (!config->extra_json().empty()) {
      const nlohmann::json extra = nlohmann::json::parse(config->extra_json(), nullptr, false);
      Require(extra.is_object() && !extra.empty());
    }
  } else {
    Require(config.status().code() == absl::StatusCode::kInvalidArgument);
  }
  auto alias = ParseSetAliasBody(body);
  Require(!alias.ok() || alias->version >= 1);

  skinlesion::v1::ClassifyResponse response;
  if (response.ParseFromString(input)) {
    const nlohmann::json j = PredictionJson(response, "00", 1.0, true);
    const std::string text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    Require(nlohmann::json::parse(text, nullptr, false).is_object());
    Require(j["probabilities"].size() == static_cast<size_t>(response.probabilities_size()));
  }
  return 0;
}
