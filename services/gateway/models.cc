#include "services/gateway/models.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "skinlesion/common/status.h"
#include "skinlesion/registry/client.h"
#include "skinlesion/rpc/status.h"

namespace skinlesion::gateway {

using nlohmann::json;

namespace {

// The largest version file served (the model card, metrics.json, plots); larger ones
// are not read.
constexpr int64_t kMaxServedFileBytes = 16 << 20;

}  // namespace

std::shared_ptr<const VersionFileCache::Files> VersionFileCache::Find(const std::string& key) {
  absl::MutexLock lock(&mu_);
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->first == key) {
      entries_.splice(entries_.begin(), entries_, it);
      return entries_.front().second;
    }
  }
  return nullptr;
}

void VersionFileCache::Put(const std::string& key, std::shared_ptr<const Files> files) {
  absl::MutexLock lock(&mu_);
  entries_.emplace_front(key, std::move(files));
  while (entries_.size() > capacity_) entries_.pop_back();
}

Models::Models(const GatewayOptions& options, Upstreams& upstreams)
    : options_(options), upstreams_(upstreams) {}

void Models::Register(HttpServer& server) {
  server.Handle("GET", "/api/v1/models", [this](const auto& req) { return List(req); });
  server.Handle("GET", "/api/v1/models/{name}/versions/{version}",
                [this](const auto& req) { return Card(req); });
  server.Handle("GET", "/api/v1/models/{name}/versions/{version}/files/{file}",
                [this](const auto& req) { return File(req); });
  server.Handle("PUT", "/api/v1/models/{name}/aliases/{alias}",
                [this](const auto& req) { return SetAlias(req); }, {.needs_token = true});
}

absl::StatusOr<Reply> Models::List(const httplib::Request& req) {
  SL_RETURN_IF_ERROR(RequireNoQuery(req));
  SL_RETURN_IF_ERROR(upstreams_.RequireRegistry());
  v1::RegistryService::Stub& registry = upstreams_.registry();
  v1::ListModelsResponse models;
  SL_RETURN_IF_ERROR(
      upstreams_.Call(Upstream::kRegistry, "ListModels", options_.upstream_timeout,
                      [&](grpc::ClientContext* c) { return registry.ListModels(c, {}, &models); }));
  // What inference serves (null when it cannot say).
  v1::ListServedModelsResponse served;
  const grpc::Status served_status = upstreams_.CallGrpc(
      Upstream::kInference, "ListServedModels", absl::Seconds(2), [&](grpc::ClientContext* c) {
        return upstreams_.inference().ListServedModels(c, {}, &served);
      });
  json out = json::array();
  for (const std::string& name : models.models()) {
    v1::ListVersionsRequest request;
    request.set_model(name);
    v1::ListVersionsResponse versions;
    SL_RETURN_IF_ERROR(upstreams_.Call(
        Upstream::kRegistry, "ListVersions", options_.upstream_timeout,
        [&](grpc::ClientContext* c) { return registry.ListVersions(c, request, &versions); }));
    std::vector<const v1::ModelVersion*> sorted;
    for (const auto& v : versions.versions()) sorted.push_back(&v);
    std::sort(sorted.begin(), sorted.end(),
              [](const auto* a, const auto* b) { return a->version() > b->version(); });
    json aliases = json::object();
    json list = json::array();
    for (const v1::ModelVersion* v : sorted) {
      for (const std::string& a : v->aliases()) aliases[a] = v->version();
      list.push_back(VersionSummaryJson(*v));
    }
    json serving = nullptr;
    if (served_status.ok()) {
      for (const v1::ServedModel& m : served.models()) {
        if (m.model().name() == name) {
          json classes = json::array();
          for (const v1::LesionClass& c : m.classes()) classes.push_back(LesionClassJson(c));
          serving = {{"version", m.model().version()},
                     {"ready", m.ready()},
                     {"classes", std::move(classes)}};
        }
      }
    }
    out.push_back({{"name", name},
                   {"aliases", std::move(aliases)},
                   {"serving", std::move(serving)},
                   {"versions", std::move(list)}});
  }
  return JsonReply({{"models", std::move(out)}});
}

absl::StatusOr<v1::ModelVersion> Models::LookUpVersion(const httplib::Request& req) {
  SL_ASSIGN_OR_RETURN(const int64_t number, ParseVersion(req.matches[2].str()));
  v1::GetVersionRequest request;
  request.set_model(req.matches[1].str());
  request.set_version(number);
  v1::ModelVersion version;
  SL_RETURN_IF_ERROR(upstreams_.Call(
      Upstream::kRegistry, "GetVersion", options_.upstream_timeout, [&](grpc::ClientContext* c) {
        return upstreams_.registry().GetVersion(c, request, &version);
      }));
  return version;
}

absl::StatusOr<Reply> Models::Card(const httplib::Request& req) {
  SL_RETURN_IF_ERROR(upstreams_.RequireRegistry());
  SL_ASSIGN_OR_RETURN(const v1::ModelVersion version, LookUpVersion(req));
  json metrics = nullptr;
  const bool has_metrics_file =
      std::any_of(version.files().begin(), version.files().end(),
                  [](const v1::FileInfo& f) { return f.path() == "metrics.json"; });
  if (has_metrics_file) {
    SL_ASSIGN_OR_RETURN(const auto files, VersionFiles(version));
    auto it = files->find("metrics.json");
    if (it != files->end()) {
      metrics = json::parse(it->second, nullptr, false);
      if (metrics.is_discarded()) metrics = nullptr;
    }
  } else {
    const json manifest = ManifestOf(version);
    if (manifest.contains("metrics") && manifest["metrics"].is_object())
      metrics = manifest["metrics"];
  }
  return JsonReply(ModelCardJson(version, metrics));
}

absl::StatusOr<Reply> Models::File(const httplib::Request& req) {
  SL_RETURN_IF_ERROR(upstreams_.RequireRegistry());
  const std::string name = req.matches[3].str();
  if (!IsValidModelFileName(name)) {
    return ToStatus(NotFound("Only the .png, .json and .md files of a version are served."));
  }
  SL_ASSIGN_OR_RETURN(const v1::ModelVersion version, LookUpVersion(req));
  SL_ASSIGN_OR_RETURN(const auto files, VersionFiles(version));
  auto it = files->find(name);
  if (it == files->end()) {
    return ToStatus(NotFound(absl::StrCat("Version ", version.version(), " of ", version.model(),
                                          " has no file ", name, ".")));
  }
  const char* type = absl::EndsWith(name, ".png")    ? "image/png"
                     : absl::EndsWith(name, ".json") ? "application/json"
                                                     : "text/markdown; charset=utf-8";
  return Reply{.status = 200, .body = it->second, .content_type = type};
}

absl::StatusOr<Reply> Models::SetAlias(const httplib::Request& req) {
  SL_RETURN_IF_ERROR(upstreams_.RequireRegistry());
  SL_RETURN_IF_ERROR(RequireBodyAtMost(req, options_.max_json_bytes));
  SL_ASSIGN_OR_RETURN(const SetAliasBody body, ParseSetAliasBody(req.body));
  v1::SetAliasRequest request;
  request.set_model(req.matches[1].str());
  request.set_alias(req.matches[2].str());
  request.set_version(body.version);
  request.set_reason(body.reason);
  request.set_force(body.force);
  v1::Alias alias;
  SL_RETURN_IF_ERROR(upstreams_.Call(
      Upstream::kRegistry, "SetAlias", options_.upstream_timeout,
      [&](grpc::ClientContext* c) { return upstreams_.registry().SetAlias(c, request, &alias); }));
  return JsonReply(
      {{"name", alias.model()}, {"alias", alias.name()}, {"version", alias.version()}});
}

absl::StatusOr<std::shared_ptr<const VersionFileCache::Files>> Models::VersionFiles(
    const v1::ModelVersion& version) {
  const std::string key = absl::StrCat(version.model(), "/", version.version());
  if (auto cached = files_.Find(key)) return cached;
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<VersionFileCache::Files> files =
      upstreams_.registry_client().ReadFiles(version, [](const v1::FileInfo& f) {
        return IsValidModelFileName(f.path()) && f.size() <= kMaxServedFileBytes;
      });
  upstreams_.Observe(Upstream::kRegistry, "DownloadVersion", t0, rpc::ToGrpcStatus(files.status()));
  if (!files.ok()) {
    if (const auto damaged = registry::DownloadDamageOf(files.status())) {
      return ToStatus(
          {.status = 502,
           .code = "internal",
           .message = absl::StrCat("The registry sent a damaged copy of ", *damaged, ".")});
    }
    return ApiStatusOf(Upstream::kRegistry, rpc::ToGrpcStatus(files.status()));
  }
  auto shared = std::make_shared<const VersionFileCache::Files>(*std::move(files));
  files_.Put(key, shared);
  return shared;
}

}  // namespace skinlesion::gateway
