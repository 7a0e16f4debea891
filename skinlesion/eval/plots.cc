#include "skinlesion/eval/plots.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace skinlesion::eval {
namespace {

// Colours for up to 8 series (Okabe-Ito, readable by colour-blind people).
constexpr double kPalette[8][3] = {{0.00, 0.45, 0.70}, {0.90, 0.62, 0.00}, {0.00, 0.62, 0.45},
                                   {0.80, 0.47, 0.65}, {0.34, 0.71, 0.91}, {0.84, 0.37, 0.00},
                                   {0.94, 0.89, 0.26}, {0.00, 0.00, 0.00}};

struct SurfaceDeleter {
  void operator()(cairo_surface_t* s) const { cairo_surface_destroy(s); }
};
struct CairoDeleter {
  void operator()(cairo_t* c) const { cairo_destroy(c); }
};

class Canvas {
 public:
  Canvas(int width, int height)
      : surface_(cairo_image_surface_create(CAIRO_FORMAT_ARGB32, width, height)),
        cr_(cairo_create(surface_.get())),
        width_(width),
        height_(height) {
    cairo_set_source_rgb(cr(), 1, 1, 1);
    cairo_paint(cr());
    cairo_select_font_face(cr(), "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  }
  cairo_t* cr() { return cr_.get(); }
  int width() const { return width_; }
  int height() const { return height_; }

  // Text anchored by (ax, ay) in [0,1]: 0 = left/top, 0.5 = centre, 1 = right/bottom.
  void Text(const std::string& s, double x, double y, double size, double ax = 0.5,
            double ay = 0.5, bool bold = false, double angle = 0) {
    cairo_save(cr());
    cairo_select_font_face(cr(), "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr(), size);
    cairo_text_extents_t ext;
    cairo_text_extents(cr(), s.c_str(), &ext);
    cairo_translate(cr(), x, y);
    cairo_rotate(cr(), angle);
    cairo_move_to(cr(), -ext.width * ax - ext.x_bearing, -ext.height * ay - ext.y_bearing);
    cairo_show_text(cr(), s.c_str());
    cairo_restore(cr());
  }

  absl::Status Write(const std::string& path) {
    cairo_surface_flush(surface_.get());
    const cairo_status_t st = cairo_surface_write_to_png(surface_.get(), path.c_str());
    if (st != CAIRO_STATUS_SUCCESS) {
      return absl::InternalError(
          absl::StrCat("cannot write plot ", path, ": ", cairo_status_to_string(st)));
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<cairo_surface_t, SurfaceDeleter> surface_;
  std::unique_ptr<cairo_t, CairoDeleter> cr_;
  int width_, height_;
};

// A plot area with axes from (x0,y0) to (x1,y1) in data space.
struct Axes {
  double left, top, right, bottom;  // Pixels.
  double x0, x1, y0, y1;            // Data range.
  double X(double x) const { return left + (x - x0) / (x1 - x0) * (right - left); }
  double Y(double y) const { return bottom - (y - y0) / (y1 - y0) * (bottom - top); }
};

void DrawAxes(Canvas& c, const Axes& a, const std::string& x_label, const std::string& y_label,
              int ticks = 5) {
  cairo_t* cr = c.cr();
  cairo_set_line_width(cr, 1);
  for (int i = 0; i <= ticks; ++i) {
    const double fx = a.x0 + (a.x1 - a.x0) * i / ticks;
    const double fy = a.y0 + (a.y1 - a.y0) * i / ticks;
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, a.X(fx), a.top);
    cairo_line_to(cr, a.X(fx), a.bottom);
    cairo_move_to(cr, a.left, a.Y(fy));
    cairo_line_to(cr, a.right, a.Y(fy));
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    c.Text(absl::StrFormat("%.3g", fx), a.X(fx), a.bottom + 6, 12, 0.5, 0);
    c.Text(absl::StrFormat("%.3g", fy), a.left - 6, a.Y(fy), 12, 1, 0.5);
  }
  cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
  cairo_rectangle(cr, a.left, a.top, a.right - a.left, a.bottom - a.top);
  cairo_stroke(cr);
  c.Text(x_label, (a.left + a.right) / 2, a.bottom + 28, 14, 0.5, 0);
  c.Text(y_label, a.left - 52, (a.top + a.bottom) / 2, 14, 0.5, 0.5, false, -M_PI / 2);
}

void Legend(Canvas& c, const std::vector<std::string>& names, double x, double y) {
  cairo_t* cr = c.cr();
  for (size_t i = 0; i < names.size(); ++i) {
    const double* col = kPalette[i % 8];
    cairo_set_source_rgb(cr, col[0], col[1], col[2]);
    cairo_rectangle(cr, x, y + 20.0 * i, 14, 10);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    c.Text(names[i], x + 20, y + 20.0 * i + 5, 12, 0, 0.5);
  }
}

}  // namespace

absl::Status PlotConfusionMatrix(const Metrics& m, const std::string& path, int size) {
  Canvas c(size, size);
  cairo_t* cr = c.cr();
  const double margin = size * 0.16;
  const int num_classes = m.classes.size();
  const double cell = (size - margin * 1.3) / num_classes;
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  c.Text(absl::StrFormat("Confusion matrix (n=%d, balanced accuracy %.3f)", m.n,
                         m.balanced_accuracy),
         size / 2.0, margin * 0.3, 16, 0.5, 0.5, true);
  for (int t = 0; t < num_classes; ++t) {
    const int support = m.per_class[t].support;
    for (int p = 0; p < num_classes; ++p) {
      const double frac = support > 0 ? static_cast<double>(m.confusion[t][p]) / support : 0.0;
      // White to dark blue.
      cairo_set_source_rgb(cr, 1 - 0.9 * frac, 1 - 0.7 * frac, 1 - 0.3 * frac);
      const double x = margin + p * cell, y = margin + t * cell;
      cairo_rectangle(cr, x, y, cell, cell);
      cairo_fill(cr);
      frac > 0.5 ? cairo_set_source_rgb(cr, 1, 1, 1) : cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
      c.Text(absl::StrCat(m.confusion[t][p]), x + cell / 2, y + cell / 2 - 7, 13);
      c.Text(absl::StrFormat("%.2f", frac), x + cell / 2, y + cell / 2 + 9, 10);
    }
  }
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  for (int k = 0; k < num_classes; ++k) {
    const std::string& code = m.classes.at(k).code;
    c.Text(code, margin + (k + 0.5) * cell, margin - 10, 13, 0.5, 1);
    c.Text(code, margin - 10, margin + (k + 0.5) * cell, 13, 1, 0.5);
  }
  c.Text("predicted", margin + num_classes * cell / 2, margin - 32, 14, 0.5, 1, true);
  c.Text("true", margin - 55, margin + num_classes * cell / 2, 14, 0.5, 0.5, true, -M_PI / 2);
  return c.Write(path);
}

absl::Status PlotRocCurves(const Metrics& m, const std::string& path, int size) {
  Canvas c(size, size);
  cairo_t* cr = c.cr();
  const Axes a{90, 60, size - 30.0, size - 70.0, 0, 1, 0, 1};
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  c.Text(absl::StrFormat("ROC, one vs rest (macro AUC %.3f)", m.macro_auc), size / 2.0, 30, 16,
         0.5, 0.5, true);
  DrawAxes(c, a, "false positive rate", "true positive rate");
  cairo_set_source_rgb(cr, 0.6, 0.6, 0.6);
  const double dash[] = {6, 4};
  cairo_set_dash(cr, dash, 2, 0);
  cairo_move_to(cr, a.X(0), a.Y(0));
  cairo_line_to(cr, a.X(1), a.Y(1));
  cairo_stroke(cr);
  cairo_set_dash(cr, nullptr, 0, 0);
  std::vector<std::string> names;
  cairo_set_line_width(cr, 2);
  const int num_classes = m.classes.size();
  for (int k = 0; k < num_classes; ++k) {
    const RocCurve& roc = m.roc[k];
    const std::string& code = m.classes.at(k).code;
    names.push_back(std::isfinite(m.per_class[k].auc)
                        ? absl::StrFormat("%s  AUC %.3f", code, m.per_class[k].auc)
                        : absl::StrFormat("%s  AUC n/a", code));
    if (roc.fpr.size() < 2 || !std::isfinite(m.per_class[k].auc)) continue;
    const double* colour = kPalette[k % 8];
    cairo_set_source_rgb(cr, colour[0], colour[1], colour[2]);
    cairo_move_to(cr, a.X(roc.fpr[0]), a.Y(roc.tpr[0]));
    for (size_t i = 1; i < roc.fpr.size(); ++i) cairo_line_to(cr, a.X(roc.fpr[i]), a.Y(roc.tpr[i]));
    cairo_stroke(cr);
  }
  Legend(c, names, a.right - 170, a.bottom - 20.0 * num_classes - 10);
  return c.Write(path);
}

absl::Status PlotReliability(const Metrics& m, const std::string& path, int size) {
  Canvas c(size, size);
  cairo_t* cr = c.cr();
  const Axes a{90, 60, size - 30.0, size - 70.0, 0, 1, 0, 1};
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  c.Text(absl::StrFormat("Reliability (ECE %.3f, %zu bins)", m.ece, m.reliability.size()),
         size / 2.0, 30, 16, 0.5, 0.5, true);
  DrawAxes(c, a, "confidence", "accuracy");
  for (const CalibrationBin& b : m.reliability) {
    if (b.count == 0) continue;
    cairo_set_source_rgba(cr, kPalette[0][0], kPalette[0][1], kPalette[0][2], 0.8);
    cairo_rectangle(cr, a.X(b.lower) + 1, a.Y(b.accuracy), a.X(b.upper) - a.X(b.lower) - 2,
                    a.Y(0) - a.Y(b.accuracy));
    cairo_fill(cr);
    // Gap to the diagonal in orange.
    cairo_set_source_rgba(cr, kPalette[5][0], kPalette[5][1], kPalette[5][2], 0.9);
    cairo_set_line_width(cr, 2);
    const double mid = (a.X(b.lower) + a.X(b.upper)) / 2;
    cairo_move_to(cr, mid, a.Y(b.accuracy));
    cairo_line_to(cr, mid, a.Y(b.confidence));
    cairo_stroke(cr);
  }
  cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
  cairo_set_line_width(cr, 1);
  cairo_move_to(cr, a.X(0), a.Y(0));
  cairo_line_to(cr, a.X(1), a.Y(1));
  cairo_stroke(cr);
  return c.Write(path);
}

absl::Status PlotLines(const std::string& title, const std::string& x_label,
                       const std::string& y_label, const std::vector<Series>& series,
                       const std::string& path, int width, int height) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Series& s : series) {
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  }
  if (!std::isfinite(x0)) return absl::InvalidArgumentError("plot: no finite points");
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  const double pad = (y1 - y0) * 0.05;
  Canvas c(width, height);
  cairo_t* cr = c.cr();
  const Axes a{90, 60, width - 190.0, height - 70.0, x0, x1, y0 - pad, y1 + pad};
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  c.Text(title, width / 2.0, 30, 16, 0.5, 0.5, true);
  DrawAxes(c, a, x_label, y_label);
  std::vector<std::string> names;
  cairo_set_line_width(cr, 2);
  for (size_t i = 0; i < series.size(); ++i) {
    names.push_back(series[i].name);
    const double* col = kPalette[i % 8];
    cairo_set_source_rgb(cr, col[0], col[1], col[2]);
    bool first = true;
    for (const auto& [x, y] : series[i].points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      first ? cairo_move_to(cr, a.X(x), a.Y(y)) : cairo_line_to(cr, a.X(x), a.Y(y));
      first = false;
    }
    cairo_stroke(cr);
    for (const auto& [x, y] : series[i].points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      cairo_arc(cr, a.X(x), a.Y(y), 3, 0, 2 * M_PI);
      cairo_fill(cr);
    }
  }
  Legend(c, names, a.right + 20, a.top);
  return c.Write(path);
}

absl::Status PlotFolds(const std::string& title, const std::vector<std::string>& round_names,
                       const std::vector<FoldColumn>& columns, const std::string& path, int width,
                       int height) {
  if (columns.empty()) return absl::InvalidArgumentError("plot: no metric");
  for (const FoldColumn& col : columns) {
    if (col.values.empty()) return absl::InvalidArgumentError(absl::StrCat("plot: no value for ", col.name));
    for (double v : col.values) {
      if (!(v >= 0 && v <= 1)) {
        return absl::InvalidArgumentError(absl::StrCat("plot: ", col.name, " value ", v, " is outside [0, 1]"));
      }
    }
  }
  Canvas c(width, height);
  cairo_t* cr = c.cr();
  const double n = static_cast<double>(columns.size());
  const Axes a{70, 60, width - 190.0, height - 70.0, -0.5, n - 0.5, 0, 1};
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  c.Text(title, width / 2.0, 30, 16, 0.5, 0.5, true);
  // Horizontal grid and y labels; one labelled slot per metric on x.
  cairo_set_line_width(cr, 1);
  for (int i = 0; i <= 10; ++i) {
    const double y = i / 10.0;
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, a.left, a.Y(y));
    cairo_line_to(cr, a.right, a.Y(y));
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    if (i % 2 == 0) c.Text(absl::StrFormat("%.1f", y), a.left - 6, a.Y(y), 12, 1, 0.5);
  }
  cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
  cairo_rectangle(cr, a.left, a.top, a.right - a.left, a.bottom - a.top);
  cairo_stroke(cr);
  const double slot = (a.right - a.left) / n;
  for (size_t m = 0; m < columns.size(); ++m) {
    const FoldColumn& col = columns[m];
    const double cx = a.X(static_cast<double>(m));
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    c.Text(col.name, cx, a.bottom + 8, 12, 0.5, 0);
    double mean = 0;
    for (double v : col.values) mean += v;
    mean /= static_cast<double>(col.values.size());
    double ss = 0;
    for (double v : col.values) ss += (v - mean) * (v - mean);
    const double sd = col.values.size() > 1 ? std::sqrt(ss / static_cast<double>(col.values.size() - 1)) : 0;
    // Mean (a bar across the slot) and +-1 sd (a vertical whisker).
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    cairo_set_line_width(cr, 2);
    cairo_move_to(cr, cx - slot * 0.3, a.Y(mean));
    cairo_line_to(cr, cx + slot * 0.3, a.Y(mean));
    cairo_move_to(cr, cx, a.Y(std::max(0.0, mean - sd)));
    cairo_line_to(cr, cx, a.Y(std::min(1.0, mean + sd)));
    cairo_stroke(cr);
    c.Text(absl::StrFormat("%.3f", mean), cx + slot * 0.32, a.Y(mean), 11, 0, 0.5);
    // One dot per round, spread across the slot.
    const double k = static_cast<double>(col.values.size());
    for (size_t r = 0; r < col.values.size(); ++r) {
      const double* rgb = kPalette[r % 8];
      cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
      const double dx = k > 1 ? (static_cast<double>(r) / (k - 1) - 0.5) * slot * 0.4 : 0;
      cairo_arc(cr, cx + dx, a.Y(col.values[r]), 4.5, 0, 2 * M_PI);
      cairo_fill(cr);
    }
  }
  Legend(c, round_names, a.right + 20, a.top);
  return c.Write(path);
}

}  // namespace skinlesion::eval
