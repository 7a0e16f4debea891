// Plots a person would look at, drawn with Cairo into PNG files:
// confusion-matrix heatmap, one-vs-rest ROC curves, reliability diagram, and
// line charts (training curves).
//
// All functions write the PNG at `path` and return an error Status when the file
// cannot be written. Sizes are in pixels.
#ifndef SKINLESION_EVAL_PLOTS_H_
#define SKINLESION_EVAL_PLOTS_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "skinlesion/eval/metrics.h"

namespace skinlesion::eval {

// Heatmap of the row-normalised confusion matrix with the counts written in each
// cell; rows are true classes, columns predicted, labelled with class codes.
absl::Status PlotConfusionMatrix(const Metrics& m, const std::string& path, int size = 720);

// One ROC curve per class (with its AUC in the legend) and the chance diagonal.
absl::Status PlotRocCurves(const Metrics& m, const std::string& path, int size = 720);

// Reliability diagram: accuracy against confidence per bin, bar width = bin,
// the diagonal for perfect calibration, and the ECE in the title.
absl::Status PlotReliability(const Metrics& m, const std::string& path, int size = 720);

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y)
};

// A line chart of several series (e.g. train loss and validation loss per epoch).
absl::Status PlotLines(const std::string& title, const std::string& x_label,
                       const std::string& y_label, const std::vector<Series>& series,
                       const std::string& path, int width = 900, int height = 540);

// Results per cross-validation round: one column per metric (values in [0, 1]), a dot
// per round (coloured by round, in the legend) and the mean with a +-1 sd bar.
// InvalidArgument for no metric, a column without values or a value outside [0, 1].
struct FoldColumn {
  std::string name;                  // e.g. "balanced accuracy"
  std::vector<double> values;        // One per round, in round order.
};
absl::Status PlotFolds(const std::string& title, const std::vector<std::string>& round_names,
                       const std::vector<FoldColumn>& columns, const std::string& path,
                       int width = 900, int height = 540);

}  // namespace skinlesion::eval

#endif  // SKINLESION_EVAL_PLOTS_H_
