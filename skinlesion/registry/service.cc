#include "skinlesion/registry/service.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/logging.h"
#include "skinlesion/common/status.h"
#include "skinlesion/rpc/status.h"

namespace skinlesion::registry {

using rpc::FromGrpcStatus;
using rpc::ToGrpcStatus;
namespace {


grpc::Status InvalidArgument(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

void ToProto(absl::string_view model, const AliasChange& change, v1::AliasChange* out) {
  out->set_model(std::string(model));
  out->set_alias(change.alias);
  out->set_from_version(change.from_version);
  out->set_to_version(change.to_version);
  out->set_reason(change.reason);
  out->set_forced(change.forced);
  google::protobuf::Timestamp time;
  if (!change.time.empty() && google::protobuf::util::TimeUtil::FromString(change.time, &time)) {
    *out->mutable_time() = time;
  }
}

// What a Watch stream last told its client about one model.
struct WatchedModel {
  std::string token;           // Registry::StateToken when last diffed.
  std::set<int64_t> versions;  // Versions already announced (or present at the start).
  size_t history_size = 0;     // Alias history records already announced.
};

// How many leading records of `history` the alias state `aliases` (read after
// it) reflects: all of them unless a move's record is written but aliases.json not
// yet (SetAlias writes them in that order); then up to that record.
size_t ReflectedHistory(const std::vector<AliasChange>& history,
                        const std::map<std::string, int64_t>& aliases) {
  std::map<std::string, size_t> last_record;
  for (size_t i = 0; i < history.size(); ++i) last_record[history[i].alias] = i;
  size_t reflected = history.size();
  for (const auto& [alias, i] : last_record) {
    const auto it = aliases.find(alias);
    if (it == aliases.end() || it->second != history[i].to_version) {
      reflected = std::min(reflected, i);
    }
  }
  return reflected;
}

}  // namespace

absl::Status ToProto(const VersionInfo& info, v1::ModelVersion* out) {
  out->Clear();
  out->set_model(info.model);
  out->set_version(info.version);
  SL_ASSIGN_OR_RETURN(std::string manifest,
                      ReadFileToString(info.path + "/manifest.json", kMaxManifestBytes));
  out->set_manifest_json(std::move(manifest));
  for (const FileEntry& f : info.files) {
    v1::FileInfo* file = out->add_files();
    file->set_path(f.name);
    file->set_size(f.size);
    file->set_sha256(f.sha256);
  }
  if (info.manifest.contains("created") && info.manifest["created"].is_string()) {
    google::protobuf::Timestamp created;
    if (google::protobuf::util::TimeUtil::FromString(info.manifest["created"].get<std::string>(),
                                                     &created)) {
      *out->mutable_created() = created;
    }
  }
  for (const std::string& alias : info.aliases) out->add_aliases(alias);
  return absl::OkStatus();
}

Authorizer BearerTokenAuthorizer(std::string token) {
  return [token = std::move(token)](grpc::ServerContext* context) -> grpc::Status {
    const auto& metadata = context->client_metadata();
    const auto it = metadata.find("authorization");
    if (it == metadata.end()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "missing 'authorization: Bearer <token>' metadata");
    }
    const std::string value(it->second.data(), it->second.size());
    constexpr absl::string_view kPrefix = "Bearer ";
    if (!absl::StartsWith(value, kPrefix)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "the authorization metadata is not a bearer token");
    }
    const absl::string_view given = absl::string_view(value).substr(kPrefix.size());
    // Constant time in the token's content.
    unsigned char diff = given.size() == token.size() ? 0 : 1;
    for (size_t i = 0; i < token.size(); ++i) {
      diff |= static_cast<unsigned char>(token[i]) ^
              static_cast<unsigned char>(i < given.size() ? given[i] : 0);
    }
    if (diff != 0 || token.empty()) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "invalid bearer token");
    }
    return grpc::Status::OK;
  };
}

class RegistryServiceImpl::ActiveCall {
 public:
  explicit ActiveCall(RegistryServiceImpl* service) : service_(service) {
    absl::MutexLock lock(&service_->mu_);
    ++service_->active_calls_;
  }
  ~ActiveCall() {
    {
      absl::MutexLock lock(&service_->mu_);
      --service_->active_calls_;
    }
    service_->cv_.SignalAll();
  }
  ActiveCall(const ActiveCall&) = delete;
  ActiveCall& operator=(const ActiveCall&) = delete;

 private:
  RegistryServiceImpl* service_;
};

RegistryServiceImpl::RegistryServiceImpl(Registry* registry, Options options)
    : registry_(registry), options_(std::move(options)) {}

RegistryServiceImpl::~RegistryServiceImpl() { Shutdown(); }

void RegistryServiceImpl::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
  }
  cv_.SignalAll();
}

bool RegistryServiceImpl::WaitUntilIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  while (active_calls_ != 0) {
    if (cv_.WaitWithDeadline(&mu_, deadline)) return active_calls_ == 0;  // Timed out.
  }
  return true;
}

bool RegistryServiceImpl::WaitUnlessShutdown(absl::Duration d) {
  const absl::Time deadline = absl::Now() + d;
  absl::MutexLock lock(&mu_);
  while (!shutdown_) {
    if (cv_.WaitWithDeadline(&mu_, deadline)) break;  // Timed out.
  }
  return !shutdown_;
}

grpc::Status RegistryServiceImpl::ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                                             v1::ListModelsResponse* response) {
  const ActiveCall active(this);
  for (const std::string& model : registry_->ListModels()) response->add_models(model);
  return grpc::Status::OK;
}

grpc::Status RegistryServiceImpl::ListVersions(grpc::ServerContext*,
                                               const v1::ListVersionsRequest* request,
                                               v1::ListVersionsResponse* response) {
  const ActiveCall active(this);
  if (auto s = ValidateName("model", request->model()); !s.ok()) return ToGrpcStatus(s);
  auto versions = registry_->ListVersions(request->model());
  if (!versions.ok()) return ToGrpcStatus(versions.status());
  for (int64_t v : *versions) {
    auto info = registry_->GetVersion(request->model(), v);
    if (!info.ok()) {
      // Removed by retention since the listing: not an error.
      if (absl::IsNotFound(info.status())) continue;
      return ToGrpcStatus(info.status());
    }
    if (auto s = ToProto(*info, response->add_versions()); !s.ok()) return ToGrpcStatus(s);
  }
  return grpc::Status::OK;
}

grpc::Status RegistryServiceImpl::GetVersion(grpc::ServerContext*,
                                             const v1::GetVersionRequest* request,
                                             v1::ModelVersion* response) {
  const ActiveCall active(this);
  if (auto s = ValidateName("model", request->model()); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<VersionInfo> info;
  switch (request->selector_case()) {
    case v1::GetVersionRequest::kVersion:
      if (request->version() <= 0) {
        return InvalidArgument(
            absl::StrCat("invalid version ", request->version(), ": versions are numbered from 1"));
      }
      info = registry_->GetVersion(request->model(), request->version());
      break;
    case v1::GetVersionRequest::kAlias:
      if (auto s = ValidateName("alias", request->alias()); !s.ok()) return ToGrpcStatus(s);
      if (auto versions = registry_->ListVersions(request->model()); !versions.ok()) {
        return ToGrpcStatus(versions.status());
      }
      info = registry_->GetAlias(request->model(), request->alias());
      break;
    default:
      return InvalidArgument("GetVersion needs a version or an alias");
  }
  if (!info.ok()) return ToGrpcStatus(info.status());
  return ToGrpcStatus(ToProto(*info, response));
}

grpc::Status RegistryServiceImpl::DownloadVersion(grpc::ServerContext* context,
                                                  const v1::DownloadVersionRequest* request,
                                                  grpc::ServerWriter<v1::FileChunk>* writer) {
  const ActiveCall active(this);
  if (auto s = ValidateName("model", request->model()); !s.ok()) return ToGrpcStatus(s);
  if (request->version() <= 0) {
    return InvalidArgument(
        absl::StrCat("invalid version ", request->version(), ": versions are numbered from 1"));
  }
  if (request->chunk_size() < 0) {
    return InvalidArgument(absl::StrCat("invalid chunk_size ", request->chunk_size()));
  }
  const int chunk_size = request->chunk_size() == 0
                             ? kDefaultChunkSize
                             : std::clamp(request->chunk_size(), kMinChunkSize, kMaxChunkSize);
  auto info = registry_->GetVersion(request->model(), request->version());
  if (!info.ok()) return ToGrpcStatus(info.status());

  std::vector<std::string> names;
  for (const FileEntry& f : info->files) names.push_back(f.name);
  names.push_back("manifest.json");
  std::string buffer(static_cast<size_t>(chunk_size), '\0');
  for (const std::string& name : names) {
    const std::string path = info->path + "/" + name;
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS,
                          absl::StrCat(request->model(), " v", request->version(), ": file ", name,
                                       " is missing from the registry"));
    }
    int64_t offset = 0;
    while (true) {
      if (context->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "download cancelled by the client");
      }
      in.read(buffer.data(), chunk_size);
      const std::streamsize n = in.gcount();
      if (in.bad()) {
        return grpc::Status(
            grpc::StatusCode::DATA_LOSS,
            absl::StrCat("cannot read ", name, " of ", request->model(), " v", request->version()));
      }
      const bool last = in.eof() || in.peek() == std::char_traits<char>::eof();
      v1::FileChunk chunk;
      chunk.set_path(name);
      chunk.set_offset(offset);
      chunk.set_data(buffer.data(), static_cast<size_t>(n));
      chunk.set_last(last);
      if (!writer->Write(chunk)) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      }
      offset += n;
      if (last) break;
    }
  }
  return grpc::Status::OK;
}

grpc::Status RegistryServiceImpl::SetAlias(grpc::ServerContext* context,
                                           const v1::SetAliasRequest* request,
                                           v1::Alias* response) {
  const ActiveCall active(this);
  if (options_.set_alias_authorizer) {
    const grpc::Status allowed = options_.set_alias_authorizer(context);
    if (!allowed.ok()) {
      SL_LOG(WARNING) << "registry: SetAlias " << request->model() << "/" << request->alias()
                      << " refused: " << allowed.error_message();
      return allowed;
    }
  }
  if (auto s = ValidateName("model", request->model()); !s.ok()) return ToGrpcStatus(s);
  if (auto s = ValidateName("alias", request->alias()); !s.ok()) return ToGrpcStatus(s);
  if (request->version() <= 0) {
    return InvalidArgument(
        absl::StrCat("invalid version ", request->version(), ": versions are numbered from 1"));
  }
  if (request->reason().size() > 4096) return InvalidArgument("reason is longer than 4096 bytes");
  const absl::Status s = registry_->SetAlias(request->model(), request->alias(), request->version(),
                                             request->reason(), request->force());
  if (!s.ok()) return ToGrpcStatus(s);
  response->set_model(request->model());
  response->set_name(request->alias());
  response->set_version(request->version());
  return grpc::Status::OK;
}

grpc::Status RegistryServiceImpl::GetAliasHistory(grpc::ServerContext*,
                                                  const v1::GetAliasHistoryRequest* request,
                                                  v1::GetAliasHistoryResponse* response) {
  const ActiveCall active(this);
  if (auto s = ValidateName("model", request->model()); !s.ok()) return ToGrpcStatus(s);
  if (!request->alias().empty()) {
    if (auto s = ValidateName("alias", request->alias()); !s.ok()) return ToGrpcStatus(s);
  }
  if (auto versions = registry_->ListVersions(request->model()); !versions.ok()) {
    return ToGrpcStatus(versions.status());
  }
  auto history = registry_->AliasHistory(request->model());
  if (!history.ok()) return ToGrpcStatus(history.status());
  for (const AliasChange& change : *history) {
    if (request->alias().empty() || change.alias == request->alias()) {
      ToProto(request->model(), change, response->add_changes());
    }
  }
  return grpc::Status::OK;
}

grpc::Status RegistryServiceImpl::Watch(grpc::ServerContext* context,
                                        const v1::WatchRequest* request,
                                        grpc::ServerWriter<v1::RegistryEvent>* writer) {
  const ActiveCall active(this);
  const bool all_models = request->model().empty();
  if (!all_models) {
    if (auto s = ValidateName("model", request->model()); !s.ok()) return ToGrpcStatus(s);
    if (auto versions = registry_->ListVersions(request->model()); !versions.ok()) {
      return ToGrpcStatus(versions.status());
    }
  }
  const grpc::Status gone(grpc::StatusCode::CANCELLED, "the client went away");
  bool wrote = false;  // The first Write sends the initial metadata.
  auto send = [&](const v1::RegistryEvent& event) {
    wrote = true;
    return writer->Write(event);
  };

  // Sends what changed in `model` since `state` (everything when `state` is new).
  // False when the client is gone.
  auto diff = [&](const std::string& model, WatchedModel* state, bool snapshot) -> bool {
    // The token first: a change racing with the reads below changes it again, so the
    // next poll looks once more (and finds nothing new, or the rest).
    auto token = registry_->StateToken(model);
    if (!token.ok() || *token == state->token) return true;
    state->token = *token;
    auto versions = registry_->ListVersions(model);
    if (!versions.ok()) return true;
    for (int64_t v : *versions) {
      if (state->versions.count(v)) continue;
      auto info = registry_->GetVersion(model, v);
      if (!info.ok()) continue;  // Retired meanwhile.
      state->versions.insert(v);
      v1::RegistryEvent event;
      event.set_snapshot(snapshot);
      if (!ToProto(*info, event.mutable_version_published()).ok()) continue;
      if (!send(event)) return false;
    }
    // Versions removed by retention are forgotten (the protocol has no removal event).
    for (auto it = state->versions.begin(); it != state->versions.end();) {
      it = std::binary_search(versions->begin(), versions->end(), *it) ? std::next(it)
                                                                       : state->versions.erase(it);
    }
    auto history = registry_->AliasHistory(model);
    if (!history.ok()) return true;
    if (history->size() < state->history_size) state->history_size = history->size();
    size_t announced = history->size();
    if (snapshot) {
      // The initial state: each current alias with the record that set it. The
      // history is read before aliases.json: a move caught between its history
      // record and its aliases.json update is not in this state, and its record
      // (with any after it) is sent as a change later.
      auto aliases = registry_->Aliases(model);
      if (aliases.ok()) {
        announced = ReflectedHistory(*history, *aliases);
        for (const auto& [alias, version] : *aliases) {
          AliasChange change{.alias = alias, .to_version = version};
          for (auto it = history->rbegin(); it != history->rend(); ++it) {
            if (it->alias == alias && it->to_version == version) {
              change = *it;
              break;
            }
          }
          v1::RegistryEvent event;
          event.set_snapshot(true);
          ToProto(model, change, event.mutable_alias_changed());
          if (!send(event)) return false;
        }
      }
    } else {
      for (size_t i = state->history_size; i < history->size(); ++i) {
        v1::RegistryEvent event;
        ToProto(model, (*history)[i], event.mutable_alias_changed());
        if (!send(event)) return false;
      }
    }
    state->history_size = announced;
    return true;
  };

  std::map<std::string, WatchedModel> models;
  auto current_models = [&]() -> std::vector<std::string> {
    if (all_models) return registry_->ListModels();
    return {request->model()};
  };
  for (const std::string& model : current_models()) {
    WatchedModel& state = models[model];
    if (request->changes_only()) {
      // Remember the present state without sending it.
      auto token = registry_->StateToken(model);
      auto versions = registry_->ListVersions(model);
      auto history = registry_->AliasHistory(model);
      auto aliases = registry_->Aliases(model);
      if (token.ok()) state.token = *token;
      if (versions.ok()) state.versions.insert(versions->begin(), versions->end());
      if (history.ok()) {
        state.history_size = aliases.ok() ? ReflectedHistory(*history, *aliases) : history->size();
      }
    } else if (!diff(model, &state, /*snapshot=*/true)) {
      return gone;
    }
  }
  // Tells the client the stream is live: every change from now on will be sent.
  if (!wrote) writer->SendInitialMetadata();
  while (WaitUnlessShutdown(options_.poll_interval)) {
    if (context->IsCancelled()) return gone;
    for (const std::string& model : current_models()) {
      // A model that appears later is new: everything in it is a change.
      if (!diff(model, &models[model], /*snapshot=*/false)) return gone;
    }
  }
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the registry server is shutting down");
}

}  // namespace skinlesion::registry
