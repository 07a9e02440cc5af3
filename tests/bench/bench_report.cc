#include "tests/bench/bench_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace virtgate::bench {
namespace {

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  return absl::StrFormat("%.6g", v);
}

// The sections in the order rows first named them.
std::vector<std::string> Sections(const std::vector<BenchRow>& rows) {
  std::vector<std::string> out;
  for (const BenchRow& r : rows) {
    if (std::find(out.begin(), out.end(), r.section) == out.end()) out.push_back(r.section);
  }
  return out;
}

std::string SectionTable(const std::vector<BenchRow>& rows, const std::string& section) {
  std::vector<std::string> columns;
  bool notes = false;
  for (const BenchRow& r : rows) {
    if (r.section != section) continue;
    notes = notes || !r.note.empty();
    for (const auto& [name, value] : r.figures) {
      if (std::find(columns.begin(), columns.end(), name) == columns.end()) columns.push_back(name);
    }
  }
  std::string out = absl::StrCat("### ", section, "\n\n| case | ", absl::StrJoin(columns, " | "),
                                 notes ? " | note |\n" : " |\n", "|---|");
  for (size_t i = 0; i < columns.size(); ++i) out += "---:|";
  out += notes ? "---|\n" : "\n";
  for (const BenchRow& r : rows) {
    if (r.section != section) continue;
    out += absl::StrCat("| ", r.name, " |");
    for (const std::string& column : columns) {
      auto it = std::find_if(r.figures.begin(), r.figures.end(),
                             [&](const auto& f) { return f.first == column; });
      out += absl::StrCat(" ", it == r.figures.end() ? "" : FormatFigure(it->second), " |");
    }
    out += notes ? absl::StrCat(" ", r.note, " |\n") : "\n";
  }
  return out + "\n";
}

}  // namespace

std::string FormatFigure(double value) {
  if (!std::isfinite(value)) return "n/a";
  const double magnitude = std::fabs(value);
  std::string digits = absl::StrFormat(magnitude >= 100 || value == std::floor(value) ? "%.0f"
                                       : magnitude >= 10                              ? "%.1f"
                                       : magnitude >= 1                               ? "%.2f"
                                                                                      : "%.3f",
                                       value);
  // Thousands separators on the integer part.
  const size_t dot = digits.find('.');
  const size_t end = dot == std::string::npos ? digits.size() : dot;
  const size_t start = digits[0] == '-' ? 1 : 0;
  for (size_t i = end; i > start + 3; i -= 3) digits.insert(i - 3, ",");
  return digits;
}

void BenchReport::Wrong(std::string why) {
  std::fprintf(stderr, "virtgate_bench: WRONG RESULT: %s\n", why.c_str());
  wrong_.push_back(std::move(why));
}

std::string BenchReport::Json() const {
  std::vector<std::string> context;
  for (const auto& [k, v] : context_)
    context.push_back(absl::StrCat(JsonString(k), ": ", JsonString(v)));
  std::vector<std::string> rows;
  for (const BenchRow& r : rows_) {
    std::vector<std::string> figures;
    for (const auto& [k, v] : r.figures) {
      figures.push_back(absl::StrCat(JsonString(k), ": ", JsonNumber(v)));
    }
    rows.push_back(absl::StrCat("    {\"section\": ", JsonString(r.section),
                                ", \"case\": ", JsonString(r.name), ", \"figures\": {",
                                absl::StrJoin(figures, ", "), "}, \"note\": ", JsonString(r.note),
                                "}"));
  }
  std::vector<std::string> targets;
  for (const BenchTarget& t : targets_) {
    targets.push_back(absl::StrCat(
        "    {\"target\": ", JsonString(t.what), ", \"value\": ", JsonNumber(t.value),
        ", \"limit\": ", JsonNumber(t.limit),
        ", \"at_least\": ", t.bound == BenchTarget::kAtLeast ? "true" : "false",
        ", \"unit\": ", JsonString(t.unit), ", \"met\": ", t.met() ? "true" : "false", "}"));
  }
  std::vector<std::string> wrong;
  for (const std::string& w : wrong_) wrong.push_back(JsonString(w));
  return absl::StrCat("{\n  \"context\": {", absl::StrJoin(context, ", "), "},\n  \"rows\": [\n",
                      absl::StrJoin(rows, ",\n"), "\n  ],\n  \"targets\": [\n",
                      absl::StrJoin(targets, ",\n"), "\n  ],\n  \"wrong\": [",
                      absl::StrJoin(wrong, ", "), "]\n}\n");
}

std::string BenchReport::Markdown() const {
  std::string out = "## virtgate_bench\n\n";
  for (const auto& [k, v] : context_) out += absl::StrCat("- ", k, ": ", v, "\n");
  out += "\n";
  for (const std::string& section : Sections(rows_)) out += SectionTable(rows_, section);
  if (!targets_.empty()) {
    out += "### Targets\n\n| target | measured | limit | met |\n|---|---:|---:|---|\n";
    for (const BenchTarget& t : targets_) {
      out += absl::StrCat("| ", t.what, " | ", FormatFigure(t.value), " ", t.unit, " | ",
                          t.bound == BenchTarget::kAtLeast ? "≥ " : "≤ ", FormatFigure(t.limit),
                          " ", t.unit, " | ", t.met() ? "yes" : "**no**", " |\n");
    }
    out += "\n";
  }
  for (const std::string& w : wrong_) out += absl::StrCat("**Wrong result:** ", w, "\n\n");
  return out;
}

absl::Status BenchReport::WriteTo(const std::string& dir) const {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", error.message()));
  for (const auto& [name, text] :
       {std::pair<std::string, std::string>{"virtgate_bench.json", Json()},
        std::pair<std::string, std::string>{"virtgate_bench.md", Markdown()}}) {
    const std::string path = absl::StrCat(dir, "/", name);
    std::ofstream out(path);
    out << text;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

}  // namespace virtgate::bench
