#include "skinlesion/train/config.h"

#include <algorithm>
#include <functional>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "skinlesion/image/augment.h"
#include "skinlesion/manifest/manifest.h"
#include "skinlesion/train/schedule.h"

namespace skinlesion::train {
namespace {

// One table drives ToJson and FromJson so the two cannot drift apart.
template <typename F>
void ForEachField(TrainConfig& c, F&& f) {
  f("architecture", c.architecture);
  f("image_size", c.image_size);
  f("init_weights", c.init_weights);
  f("dropout", c.dropout);
  f("augmentation", c.augmentation);
  f("sampler", c.sampler);
  f("class_weighting", c.class_weighting);
  f("samples_per_epoch", c.samples_per_epoch);
  f("batch_size", c.batch_size);
  f("grad_accum", c.grad_accum);
  f("num_workers", c.num_workers);
  f("threads", c.threads);
  f("epochs", c.epochs);
  f("frozen_epochs", c.frozen_epochs);
  f("optimizer", c.optimizer);
  f("lr", c.lr);
  f("backbone_lr_factor", c.backbone_lr_factor);
  f("layer_decay", c.layer_decay);
  f("weight_decay", c.weight_decay);
  f("momentum", c.momentum);
  f("nesterov", c.nesterov);
  f("schedule", c.schedule);
  f("t0", c.t0);
  f("t_mult", c.t_mult);
  f("min_lr_factor", c.min_lr_factor);
  f("warmup_epochs", c.warmup_epochs);
  f("step_epochs", c.step_epochs);
  f("gamma", c.gamma);
  f("loss", c.loss);
  f("focal_gamma", c.focal_gamma);
  f("label_smoothing", c.label_smoothing);
  f("logit_adjust_tau", c.logit_adjust_tau);
  f("mixup_alpha", c.mixup_alpha);
  f("cutmix_alpha", c.cutmix_alpha);
  f("mix_prob", c.mix_prob);
  f("distill_answers", c.distill_answers);
  f("distill_weight", c.distill_weight);
  f("distill_temperature", c.distill_temperature);
  f("precision", c.precision);
  f("clip_grad_norm", c.clip_grad_norm);
  f("ema_decay", c.ema_decay);
  f("target_sensitivity", c.target_sensitivity);
  f("referral_confidence", c.referral_confidence);
  f("balanced_decision", c.balanced_decision);
  f("recall_target_class", c.recall_target_class);
  f("recall_target", c.recall_target);
  f("malignant_classes", c.malignant_classes);
  f("colour_constancy_p", c.colour_constancy_p);
  f("resize", c.resize);
  f("monitor", c.monitor);
  f("patience", c.patience);
  f("select_epoch", c.select_epoch);
  f("seed", c.seed);
  f("progress_interval_s", c.progress_interval_s);
}

}  // namespace

nlohmann::json TrainConfig::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  TrainConfig copy = *this;
  ForEachField(copy, [&](const char* key, auto& value) { j[key] = value; });
  return j;
}

absl::StatusOr<TrainConfig> TrainConfig::FromJson(const nlohmann::json& j, const TrainConfig& base) {
  if (!j.is_object()) return absl::InvalidArgumentError("training config must be a JSON object");
  TrainConfig c = base;
  std::vector<std::string> problems;
  std::map<std::string, bool> known;
  ForEachField(c, [&](const char* key, auto& value) {
    known[key] = true;
    if (!j.contains(key)) return;
    using T = std::decay_t<decltype(value)>;
    const nlohmann::json& v = j[key];
    const bool ok = std::is_same_v<T, std::string> ? v.is_string()
                    : std::is_same_v<T, bool>      ? v.is_boolean()
                    : std::is_floating_point_v<T>  ? v.is_number()
                    : std::is_unsigned_v<T>        ? v.is_number_unsigned()
                                                   : v.is_number_integer();
    if (!ok) {
      problems.push_back(absl::StrCat("'", key, "' has the wrong type (", v.type_name(), ")"));
      return;
    }
    value = v.get<T>();
  });
  for (const auto& [key, value] : j.items()) {
    if (!known.count(key)) problems.push_back(absl::StrCat("unknown key '", key, "'"));
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("training config: ", absl::StrJoin(problems, "; ")));
  }
  return c;
}

PreprocessOptions TrainConfig::Preprocess() const {
  PreprocessOptions o;
  o.size = static_cast<int>(image_size);
  o.shades_of_gray_p = colour_constancy_p;
  o.mode = resize == kResizeDirect ? ResizeMode::kDirectResize
                                   : ResizeMode::kResizeShorterThenCenterCrop;
  return o;
}

absl::StatusOr<TrainChoices> TrainConfig::Choices() const {
  std::vector<std::string> p;
  TrainChoices choices;
  // Parses one enumerated field into `out`, or records why it cannot.
  const auto parse = [&p](const auto& parsed, auto& out) {
    if (parsed.ok()) {
      out = *parsed;
    } else {
      p.push_back(std::string(parsed.status().message()));
    }
  };
  if (architecture.empty()) p.push_back("architecture is empty");
  if (image_size < 16 || image_size > 1024) p.push_back("image_size must be in [16, 1024]");
  if (const auto& presets = PresetNames();
      std::find(presets.begin(), presets.end(), augmentation) == presets.end()) {
    p.push_back(absl::StrCat("unknown augmentation '", augmentation, "' (expected ",
                             absl::StrJoin(presets, ", "), ")"));
  }
  parse(ParseSamplerKind(sampler), choices.sampler);
  parse(ParseClassWeighting(class_weighting), choices.class_weighting);
  if (samples_per_epoch < 0)
    p.push_back("samples_per_epoch must be >= 0 (0: the training set's size)");
  if (samples_per_epoch > 0 && sampler != "balanced") {
    p.push_back(
        "samples_per_epoch needs sampler \"balanced\" (a shuffled epoch is the training set)");
  }
  if (batch_size < 1) p.push_back("batch_size must be >= 1");
  if (grad_accum < 1) p.push_back("grad_accum must be >= 1");
  if (num_workers < 0) p.push_back("num_workers must be >= 0");
  if (threads < 1) p.push_back("threads must be >= 1");
  if (epochs < 1) p.push_back("epochs must be >= 1");
  if (frozen_epochs < 0 || frozen_epochs > epochs) p.push_back("frozen_epochs must be in [0, epochs]");
  parse(ParseOptimizerKind(optimizer), choices.optimizer);
  if (!(lr > 0 && lr < 10)) p.push_back("lr must be in (0, 10)");
  if (!(backbone_lr_factor >= 0 && backbone_lr_factor <= 10)) p.push_back("backbone_lr_factor must be in [0, 10]");
  if (!(layer_decay > 0 && layer_decay <= 1)) p.push_back("layer_decay must be in (0, 1]");
  if (weight_decay < 0) p.push_back("weight_decay must be >= 0");
  if (momentum < 0 || momentum >= 1) p.push_back("momentum must be in [0, 1)");
  if (auto kind = ParseScheduleKind(schedule); !kind.ok()) {
    p.push_back(std::string(kind.status().message()));
  } else {
    choices.schedule = *kind;
    ScheduleOptions s;
    s.kind = *kind;
    s.t0 = t0;
    s.t_mult = t_mult;
    s.min_factor = min_lr_factor;
    s.warmup_epochs = warmup_epochs;
    s.total_epochs = epochs;
    s.step_epochs = step_epochs;
    s.gamma = gamma;
    if (auto st = ValidateSchedule(s); !st.ok()) p.push_back(std::string(st.message()));
  }
  parse(ParseLossKind(loss), choices.loss);
  if (focal_gamma < 0) p.push_back("focal_gamma must be >= 0");
  if (!(logit_adjust_tau >= 0 && logit_adjust_tau <= 10)) p.push_back("logit_adjust_tau must be in [0, 10]");
  if (label_smoothing < 0 || label_smoothing >= 1) p.push_back("label_smoothing must be in [0, 1)");
  if (!(mixup_alpha >= 0 && mixup_alpha <= 10)) p.push_back("mixup_alpha must be in [0, 10]");
  if (!(cutmix_alpha >= 0 && cutmix_alpha <= 10)) p.push_back("cutmix_alpha must be in [0, 10]");
  if (!(mix_prob >= 0 && mix_prob <= 1)) p.push_back("mix_prob must be in [0, 1]");
  if (!(distill_weight >= 0 && distill_weight <= 1))
    p.push_back("distill_weight must be in [0, 1]");
  if (!(distill_temperature > 0 && distill_temperature <= 20)) {
    p.push_back("distill_temperature must be in (0, 20]");
  }
  parse(ParseTrainPrecision(precision), choices.precision);
  if (ema_decay < 0 || ema_decay >= 1) p.push_back("ema_decay must be in [0, 1)");
  if (colour_constancy_p < 0 || colour_constancy_p > 16) p.push_back("colour_constancy_p must be in [0, 16]");
  if (std::string problem = ResizeModeProblem("resize", resize); !problem.empty())
    p.push_back(problem);
  if (!(target_sensitivity > 0 && target_sensitivity <= 1)) {
    p.push_back("target_sensitivity must be in (0, 1]");
  }
  if (!(referral_confidence >= 0 && referral_confidence < 1)) {
    p.push_back("referral_confidence must be in [0, 1) (0: the point estimate)");
  }
  if (!(recall_target >= 0 && recall_target <= 1)) p.push_back("recall_target must be in [0, 1]");
  if (recall_target > 0 && recall_target_class.empty()) {
    p.push_back("recall_target_class is empty (a class code, e.g. mel)");
  }
  if (patience < 0) p.push_back("patience must be >= 0");
  if (select_epoch != "best" && select_epoch != "last") {
    p.push_back(absl::StrCat("select_epoch '", select_epoch, "' is not best or last"));
  } else if (select_epoch == "last" && patience > 0) {
    p.push_back(
        "select_epoch last runs every epoch: set patience 0 (early stopping picks by the monitor)");
  }
  if (monitor.empty()) p.push_back("monitor is empty");
  if (p.empty()) return choices;
  return absl::InvalidArgumentError(absl::StrCat("invalid training config: ", absl::StrJoin(p, "; ")));
}

}  // namespace skinlesion::train
