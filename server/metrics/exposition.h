// Exposition: writes metrics in the Prometheus text exposition format,
// version 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).
//
// Each metric family is opened once with its name, help and type, which
// writes `# HELP` and `# TYPE`; its samples follow. Label values and help
// text are escaped here (backslash, double quote, newline), so callers pass
// any string. Names are the caller's constants ([a-zA-Z_:][a-zA-Z0-9_:]*).
//
// Not thread-safe: one scrape builds one Exposition.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace virtgate {

class Exposition {
 public:
  enum class Type { kCounter, kGauge, kHistogram, kUntyped };
  using Labels = std::vector<std::pair<absl::string_view, absl::string_view>>;

  // The Content-Type to serve it with.
  static constexpr absl::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

  // Starts a family: `# HELP name help` and `# TYPE name type`.
  void Family(absl::string_view name, absl::string_view help, Type type);

  // A family of one sample without labels: Family(name, help, type), then
  // `name value`.
  void Single(absl::string_view name, absl::string_view help, Type type, double value) {
    Family(name, help, type);
    Sample(name, value);
  }

  // `name{labels} value` for the current family (a counter's name ends in
  // _total; the family's name is taken as given).
  void Sample(absl::string_view name, const Labels& labels, double value);
  void Sample(absl::string_view name, double value) { Sample(name, {}, value); }

  // A histogram's samples: cumulative `name_bucket{le=...}` for each upper
  // bound in `bounds` (ascending) and +Inf, then `name_sum` and
  // `name_count`. `counts[i]` is how many observations fell at or below
  // bounds[i] and above bounds[i-1]; counts has bounds.size() + 1 entries,
  // the last for those above every bound.
  void Histogram(absl::string_view name, const Labels& labels, const std::vector<double>& bounds,
                 const std::vector<uint64_t>& counts, double sum);

  // Room for `more` bytes beyond what is written.
  void Reserve(size_t more) { out_.reserve(out_.size() + more); }

  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void AppendLabels(const Labels& labels, absl::string_view extra_name = {},
                    absl::string_view extra_value = {});
  void AppendValue(double value);

  std::string out_;
};

// A label value (or help text, with `quote` false) escaped for the format.
std::string EscapeLabelValue(absl::string_view value);
std::string EscapeHelp(absl::string_view help);
// The shortest text that reads back as `value`: "1", "0.25", "+Inf", "NaN".
std::string FormatValue(double value);

}  // namespace virtgate
