#include "server/metrics/exposition.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace virtgate {
namespace {

const char* TypeName(Exposition::Type type) {
  switch (type) {
    case Exposition::Type::kCounter: return "counter";
    case Exposition::Type::kGauge: return "gauge";
    case Exposition::Type::kHistogram: return "histogram";
    case Exposition::Type::kUntyped: return "untyped";
  }
  return "untyped";
}

void Escape(absl::string_view text, bool quote, std::string* out) {
  // Most values (UUIDs, names, numbers) need nothing escaped.
  if (text.find_first_of(quote ? "\\\n\"" : "\\\n") == absl::string_view::npos) {
    out->append(text.data(), text.size());
    return;
  }
  for (char c : text) {
    switch (c) {
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '"':
        if (quote) {
          out->append("\\\"");
        } else {
          out->push_back(c);
        }
        break;
      default: out->push_back(c);
    }
  }
}

}  // namespace

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  Escape(value, /*quote=*/true, &out);
  return out;
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  Escape(help, /*quote=*/false, &out);
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Integers (counts, bytes) exactly, up to 2^53; otherwise %.17g reads back
  // as the same double, and is shortened where a shorter form does too.
  if (value == std::floor(value) && std::fabs(value) < 9007199254740992.0) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  char buffer[32];
  for (int precision : {6, 9, 12, 17}) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

void Exposition::Family(absl::string_view name, absl::string_view help, Type type) {
  absl::StrAppend(&out_, "# HELP ", name, " ");
  Escape(help, /*quote=*/false, &out_);
  absl::StrAppend(&out_, "\n# TYPE ", name, " ", TypeName(type), "\n");
}

void Exposition::AppendLabels(const Labels& labels, absl::string_view extra_name,
                              absl::string_view extra_value) {
  if (labels.empty() && extra_name.empty()) return;
  out_.push_back('{');
  bool first = true;
  auto append = [&](absl::string_view name, absl::string_view value) {
    if (!first) out_.push_back(',');
    first = false;
    absl::StrAppend(&out_, name, "=\"");
    Escape(value, /*quote=*/true, &out_);
    out_.push_back('"');
  };
  for (const auto& [name, value] : labels) append(name, value);
  if (!extra_name.empty()) append(extra_name, extra_value);
  out_.push_back('}');
}

void Exposition::AppendValue(double value) {
  absl::StrAppend(&out_, " ", FormatValue(value), "\n");
}

void Exposition::Sample(absl::string_view name, const Labels& labels, double value) {
  out_.append(name.data(), name.size());
  AppendLabels(labels);
  AppendValue(value);
}

void Exposition::Histogram(absl::string_view name, const Labels& labels,
                           const std::vector<double>& bounds, const std::vector<uint64_t>& counts,
                           double sum) {
  const std::string bucket = absl::StrCat(name, "_bucket");
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += i < counts.size() ? counts[i] : 0;
    out_.append(bucket);
    AppendLabels(labels, "le", i < bounds.size() ? FormatValue(bounds[i]) : "+Inf");
    AppendValue(static_cast<double>(cumulative));
  }
  absl::StrAppend(&out_, name, "_sum");
  AppendLabels(labels);
  AppendValue(sum);
  absl::StrAppend(&out_, name, "_count");
  AppendLabels(labels);
  AppendValue(static_cast<double>(cumulative));
}

}  // namespace virtgate
