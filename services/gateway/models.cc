#include "services/gateway/models.h"

#include <algorithm>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "skinlesion/common/hash.h"
#include "skinlesion/common/status.h"

namespace skinlesion::gateway {

using nlohmann::json;

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
  std::map<std::string, const v1::FileInfo*> wanted;
  for (const v1::FileInfo& f : version.files()) {
    if (IsValidModelFileName(f.path()) && f.size() <= (16 << 20)) wanted[f.path()] = &f;
  }
  auto files = std::make_shared<VersionFileCache::Files>();
  v1::DownloadVersionRequest request;
  request.set_model(version.model());
  request.set_version(version.version());
  SL_RETURN_IF_ERROR(upstreams_.Call(
      Upstream::kRegistry, "DownloadVersion", absl::Seconds(60), [&](grpc::ClientContext* context) {
        auto reader = upstreams_.registry().DownloadVersion(context, request);
        v1::FileChunk chunk;
        while (reader->Read(&chunk)) {
          if (wanted.count(chunk.path()) == 0) continue;  // Weights etc.
          std::string& data = (*files)[chunk.path()];
          if (chunk.offset() != static_cast<int64_t>(data.size())) {
            context->TryCancel();
            break;
          }
          data += chunk.data();
        }
        return reader->Finish();
      }));
  for (const auto& [path, info] : wanted) {
    auto it = files->find(path);
    if (it == files->end() || Sha256Hex(it->second) != info->sha256()) {
      return ToStatus({.status = 502,
                       .code = "internal",
                       .message = absl::StrCat("The registry sent a damaged copy of ", path, ".")});
    }
  }
  files_.Put(key, files);
  return std::shared_ptr<const VersionFileCache::Files>(files);
}

}  // namespace skinlesion::gateway
