// BenchReport: every figure of one deploy/bench.sh run, written as one JSON
// file (for tools) and one Markdown file (for the README), with the issue's
// targets checked against the figures of the same run.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace virtgate::bench {

// One measured case: a row of its section's table.
struct BenchRow {
  std::string section;  // "Listing latency", "Throughput", ...
  std::string name;     // "virtgate FRESH, pages of 5,000"
  // Figure name -> value, in the order the table shows them; a name ending
  // in "_ms", "_us", "_mb", "_s", "per_s" or starting with "x_" says its unit.
  std::vector<std::pair<std::string, double>> figures;
  std::string note;  // shown in the table's last column
};

// A target the run is held to: met when value <= limit (kAtMost) or
// value >= limit (kAtLeast).
struct BenchTarget {
  enum Bound { kAtMost, kAtLeast };
  std::string what;
  double value = 0;
  double limit = 0;
  Bound bound = kAtMost;
  std::string unit;
  bool met() const { return bound == kAtLeast ? value >= limit : value <= limit; }
};

class BenchReport {
 public:
  void Add(BenchRow row) { rows_.push_back(std::move(row)); }
  void Target(BenchTarget target) { targets_.push_back(std::move(target)); }
  // Something the run found wrong (a listing incomplete, an event lost):
  // reported, and the run exits 1.
  void Wrong(std::string why);
  bool any_wrong() const { return !wrong_.empty(); }
  void SetContext(std::string key, std::string value) {
    context_.emplace_back(std::move(key), std::move(value));
  }

  std::string Json() const;
  std::string Markdown() const;
  // <dir>/virtgate_bench.json and .md.
  absl::Status WriteTo(const std::string& dir) const;

 private:
  std::vector<std::pair<std::string, std::string>> context_;
  std::vector<BenchRow> rows_;
  std::vector<BenchTarget> targets_;
  std::vector<std::string> wrong_;
};

// "1,234.5" style: the README's numbers.
std::string FormatFigure(double value);

}  // namespace virtgate::bench
