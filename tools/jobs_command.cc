#include "tools/jobs_command.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "skinlesion/common/csv.h"
#include "skinlesion/common/json_file.h"
#include "skinlesion/common/status.h"
#include "skinlesion/rpc/status.h"
#include "skinlesion/v1/training.grpc.pb.h"

ABSL_DECLARE_FLAG(std::string, config);
ABSL_DECLARE_FLAG(std::string, set);
ABSL_DECLARE_FLAG(std::string, data);
ABSL_DECLARE_FLAG(std::string, metadata);
ABSL_DECLARE_FLAG(std::string, split);
ABSL_DECLARE_FLAG(bool, json);

ABSL_FLAG(std::string, trainer, "", "jobs: skinlesion-trainer address HOST:PORT");
ABSL_FLAG(std::string, token_file, "",
          "jobs: file with the trainer's bearer token (default: $SKINLESION_TRAINER_TOKEN)");
ABSL_FLAG(std::string, tls_ca, "",
          "jobs: PEM CA certificate: connect with TLS, verifying the trainer");
ABSL_FLAG(std::string, state, "", "jobs list: only these states, e.g. queued,running");
ABSL_FLAG(bool, follow, false, "jobs submit: watch the job after submitting it");

namespace skinlesion::cli {
namespace {

namespace fs = std::filesystem;
using google::protobuf::util::JsonPrintOptions;

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

std::string StateText(v1::JobState s) {
  std::string name = v1::JobState_Name(s);
  if (absl::StartsWith(name, "JOB_STATE_")) name = name.substr(10);
  return absl::AsciiStrToLower(name);
}

struct Connection {
  std::unique_ptr<v1::TrainerService::Stub> stub;
  std::string token;
};

absl::StatusOr<Connection> Connect() {
  const std::string target = absl::GetFlag(FLAGS_trainer);
  if (target.empty()) return absl::InvalidArgumentError("--trainer HOST:PORT is required");
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (const std::string ca = absl::GetFlag(FLAGS_tls_ca); !ca.empty()) {
    SL_ASSIGN_OR_RETURN(const std::string pem, ReadFileToString(ca, 1 << 20));
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem;
    credentials = grpc::SslCredentials(ssl);
  }
  Connection c;
  c.stub = v1::TrainerService::NewStub(grpc::CreateChannel(target, credentials));
  if (const std::string file = absl::GetFlag(FLAGS_token_file); !file.empty()) {
    SL_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(file, 1 << 20));
    c.token = std::string(absl::StripAsciiWhitespace(text));
  } else if (const char* env = std::getenv("SKINLESION_TRAINER_TOKEN")) {
    c.token = std::string(absl::StripAsciiWhitespace(env));
  }
  return c;
}

void Prepare(grpc::ClientContext& context, const Connection& c, bool auth) {
  if (auth && !c.token.empty()) context.AddMetadata("authorization", "Bearer " + c.token);
}

absl::StatusOr<nlohmann::json> ParseSet(const std::string& text) {
  nlohmann::json j = nlohmann::json::object();
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    const std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (kv.first.empty() || item.find('=') == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--set: expected key=value, got '", item, "'"));
    }
    nlohmann::json v = nlohmann::json::parse(kv.second, nullptr, false);
    j[kv.first] = v.is_discarded() ? nlohmann::json(kv.second) : v;
  }
  return j;
}

void PrintJob(const v1::Job& job) {
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", Json(job).c_str());
    return;
  }
  std::string line = absl::StrFormat("%-32s %-10s %-20s %s", job.id(), StateText(job.state()),
                                     job.config().model_name(), job.config().architecture());
  if (job.state() == v1::JOB_STATE_RUNNING)
    absl::StrAppend(&line, "  ", FormatProgress(job.progress()));
  if (job.has_published()) {
    absl::StrAppend(&line, "  published ", job.published().name(), " v", job.published().version(),
                    " (", job.published().alias(), ")");
  }
  std::printf("%s\n", line.c_str());
  if (!job.failure_reason().empty()) std::printf("  failure: %s\n", job.failure_reason().c_str());
  for (const std::string& note : job.notes()) std::printf("  note: %s\n", note.c_str());
}

absl::Status Watch(const Connection& c, const std::string& id) {
  grpc::ClientContext context;
  Prepare(context, c, false);
  v1::WatchJobRequest request;
  request.set_id(id);
  auto reader = c.stub->WatchJob(&context, request);
  const bool tty = ::isatty(1);
  const bool json = absl::GetFlag(FLAGS_json);
  bool progress_open = false;  // A progress line without its newline yet.
  auto end_progress = [&] {
    if (progress_open) std::printf("\n");
    progress_open = false;
  };
  v1::JobEvent event;
  v1::JobState last_state = v1::JOB_STATE_UNSPECIFIED;
  while (reader->Read(&event)) {
    if (json) {
      std::string out;
      (void)google::protobuf::util::MessageToJsonString(event, &out);
      std::printf("%s\n", out.c_str());
    } else if (event.has_progress()) {
      const std::string text = FormatProgress(event.progress());
      if (tty) {
        std::printf("\r\033[K%s", text.c_str());
        progress_open = true;
      } else {
        std::printf("%s\n", text.c_str());
      }
    } else if (event.event_case() == v1::JobEvent::kState) {
      end_progress();
      std::printf("state: %s\n", StateText(event.state()).c_str());
    } else if (event.event_case() == v1::JobEvent::kLogLine) {
      end_progress();
      std::printf("  | %s\n", event.log_line().c_str());
    }
    if (event.event_case() == v1::JobEvent::kState) last_state = event.state();
    std::fflush(stdout);
  }
  end_progress();
  SL_RETURN_IF_ERROR(rpc::FromGrpcStatus(reader->Finish(), "WatchJob"));
  grpc::ClientContext get_context;
  v1::GetJobRequest get;
  get.set_id(id);
  v1::Job job;
  SL_RETURN_IF_ERROR(rpc::FromGrpcStatus(c.stub->GetJob(&get_context, get, &job), "GetJob"));
  if (!json) PrintJob(job);
  (void)last_state;
  if (job.state() == v1::JOB_STATE_FAILED)
    return absl::AbortedError(absl::StrCat("job ", id, " failed"));
  if (job.state() == v1::JOB_STATE_CANCELLED)
    return absl::CancelledError(absl::StrCat("job ", id, " was cancelled"));
  return absl::OkStatus();
}

absl::StatusOr<v1::TrainingConfig> SubmitConfig() {
  nlohmann::json j = nlohmann::json::object();
  if (const std::string file = absl::GetFlag(FLAGS_config); !file.empty()) {
    SL_ASSIGN_OR_RETURN(j, ReadJsonObject(file, 1 << 20, absl::StatusCode::kInvalidArgument));
  }
  SL_ASSIGN_OR_RETURN(const nlohmann::json overrides, ParseSet(absl::GetFlag(FLAGS_set)));
  for (const auto& [k, v] : overrides.items()) j[k] = v;
  // Local paths are resolved here: the trainer's working directory is not ours.
  auto absolute = [](const std::string& p) {
    std::error_code ec;
    return fs::absolute(p, ec).lexically_normal().string();
  };
  if (!absl::GetFlag(FLAGS_data).empty()) j["data_dir"] = absolute(absl::GetFlag(FLAGS_data));
  if (!absl::GetFlag(FLAGS_metadata).empty())
    j["metadata_file"] = absolute(absl::GetFlag(FLAGS_metadata));
  if (!absl::GetFlag(FLAGS_split).empty()) j["split_file"] = absolute(absl::GetFlag(FLAGS_split));
  if (j.empty())
    return absl::InvalidArgumentError("jobs submit needs --config job.json or --set k=v,...");
  return TrainingConfigFromJson(j);
}

}  // namespace

absl::StatusOr<v1::TrainingConfig> TrainingConfigFromJson(const nlohmann::json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("a job config must be a JSON object");
  const google::protobuf::Descriptor* descriptor = v1::TrainingConfig::descriptor();
  nlohmann::json typed = nlohmann::json::object();
  nlohmann::json extra = nlohmann::json::object();
  for (const auto& [key, value] : j.items()) {
    const google::protobuf::FieldDescriptor* field = descriptor->FindFieldByName(key);
    if (field == nullptr) field = descriptor->FindFieldByCamelcaseName(key);
    if (field == nullptr) {
      extra[key] = value;
    } else if (field->name() == "extra_json") {
      const nlohmann::json inner =
          value.is_string() ? nlohmann::json::parse(value.get<std::string>(), nullptr, false)
                            : value;
      if (!inner.is_object()) return absl::InvalidArgumentError("extra_json must be a JSON object");
      for (const auto& [k, v] : inner.items()) {
        if (!extra.contains(k)) extra[k] = v;
      }
    } else if (field->type() == google::protobuf::FieldDescriptor::TYPE_STRING &&
               !value.is_string()) {
      typed[key] = value.dump();  // --set model_name=123
    } else {
      typed[key] = value;
    }
  }
  if (!extra.empty()) typed["extra_json"] = extra.dump();
  v1::TrainingConfig config;
  const auto s = google::protobuf::util::JsonStringToMessage(typed.dump(), &config);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("job config: ", s.ToString()));
  return config;
}

std::string FormatProgress(const v1::JobProgress& p) {
  std::string out = absl::StrFormat("epoch %d/%d %s", p.epoch() + 1, p.epochs(), p.phase());
  if (p.steps() > 0) absl::StrAppend(&out, absl::StrFormat("  step %d/%d", p.step(), p.steps()));
  absl::StrAppend(&out,
                  absl::StrFormat("  loss %.4f  %.1f img/s", p.loss(), p.images_per_second()));
  if (p.eta_seconds() > 0) {
    const int64_t s = static_cast<int64_t>(p.eta_seconds() + 0.5);
    absl::StrAppend(&out, s >= 3600
                              ? absl::StrFormat("  ETA %d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
                              : absl::StrFormat("  ETA %d:%02d", s / 60, s % 60));
  }
  for (const char* key : {"balanced_accuracy", "melanoma_recall"}) {
    auto it = p.validation_metrics().find(key);
    if (it != p.validation_metrics().end())
      absl::StrAppend(&out, absl::StrFormat("  val %s %.3f", key, it->second));
  }
  return out;
}

absl::Status RunJobsCommand(const std::vector<std::string>& positional) {
  if (positional.empty()) {
    return absl::InvalidArgumentError(
        "usage: skinlesion jobs submit|list|get|watch|cancel --trainer HOST:PORT ...");
  }
  const std::string action = positional[0];
  const std::vector<std::string> ids(positional.begin() + 1, positional.end());
  auto need_id = [&]() -> absl::StatusOr<std::string> {
    if (ids.size() != 1)
      return absl::InvalidArgumentError(absl::StrCat("jobs ", action, " takes one JOB_ID"));
    return ids[0];
  };
  if (action == "submit") {
    if (!ids.empty())
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", ids[0], "'"));
    SL_ASSIGN_OR_RETURN(const v1::TrainingConfig config, SubmitConfig());
    SL_ASSIGN_OR_RETURN(const Connection c, Connect());
    grpc::ClientContext context;
    Prepare(context, c, true);
    v1::SubmitJobRequest request;
    *request.mutable_config() = config;
    v1::Job job;
    SL_RETURN_IF_ERROR(rpc::FromGrpcStatus(c.stub->SubmitJob(&context, request, &job), "SubmitJob"));
    if (absl::GetFlag(FLAGS_json)) {
      std::printf("%s\n", Json(job).c_str());
    } else {
      std::printf("submitted %s\n", job.id().c_str());
    }
    std::fflush(stdout);
    if (absl::GetFlag(FLAGS_follow)) return Watch(c, job.id());
    return absl::OkStatus();
  }
  if (action == "list") {
    v1::ListJobsRequest request;
    for (absl::string_view name :
         absl::StrSplit(absl::GetFlag(FLAGS_state), ',', absl::SkipEmpty())) {
      v1::JobState state;
      if (!v1::JobState_Parse(absl::StrCat("JOB_STATE_", absl::AsciiStrToUpper(name)), &state) ||
          state == v1::JOB_STATE_UNSPECIFIED) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--state: unknown state '", name, "' (queued, running, succeeded, failed, cancelled)"));
      }
      request.add_states(state);
    }
    SL_ASSIGN_OR_RETURN(const Connection c, Connect());
    grpc::ClientContext context;
    Prepare(context, c, false);
    v1::ListJobsResponse response;
    SL_RETURN_IF_ERROR(rpc::FromGrpcStatus(c.stub->ListJobs(&context, request, &response), "ListJobs"));
    for (const v1::Job& job : response.jobs()) PrintJob(job);
    if (response.jobs().empty() && !absl::GetFlag(FLAGS_json)) std::printf("no jobs\n");
    return absl::OkStatus();
  }
  if (action == "get" || action == "cancel") {
    SL_ASSIGN_OR_RETURN(const std::string id, need_id());
    SL_ASSIGN_OR_RETURN(const Connection c, Connect());
    grpc::ClientContext context;
    v1::Job job;
    if (action == "get") {
      v1::GetJobRequest request;
      request.set_id(id);
      SL_RETURN_IF_ERROR(rpc::FromGrpcStatus(c.stub->GetJob(&context, request, &job), "GetJob"));
    } else {
      Prepare(context, c, true);
      v1::CancelJobRequest request;
      request.set_id(id);
      SL_RETURN_IF_ERROR(rpc::FromGrpcStatus(c.stub->CancelJob(&context, request, &job), "CancelJob"));
    }
    PrintJob(job);
    return absl::OkStatus();
  }
  if (action == "watch") {
    SL_ASSIGN_OR_RETURN(const std::string id, need_id());
    SL_ASSIGN_OR_RETURN(const Connection c, Connect());
    return Watch(c, id);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown jobs action '", action, "' (submit, list, get, watch, cancel)"));
}

}  // namespace skinlesion::cli
