#include "tests/support/metrics_text.h"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/files.h"
#include "tests/support/http_get.h"

namespace virtgate::testing {

absl::StatusOr<std::string> ScrapeMetrics(const std::string& address, absl::Duration timeout) {
  absl::StatusOr<HttpResponse> r = HttpGet(address, "/metrics", timeout);
  if (!r.ok()) return r.status();
  if (r->status != 200) {
    return absl::UnknownError(absl::StrCat("GET /metrics: HTTP ", r->status, ": ", r->body));
  }
  return std::move(r->body);
}

std::optional<double> SampleValue(const std::string& exposition, const std::string& series) {
  const std::string prefix = series + " ";
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (!absl::StartsWith(line, prefix)) continue;
    line.remove_prefix(prefix.size());
    double value = 0;
    if (line == "+Inf") return HUGE_VAL;
    if (absl::SimpleAtod(line, &value)) return value;
    return std::nullopt;
  }
  return std::nullopt;
}

int CountSamples(const std::string& exposition, const std::string& name) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (absl::StartsWith(line, absl::StrCat(name, "{")) ||
        absl::StartsWith(line, absl::StrCat(name, " "))) {
      ++n;
    }
  }
  return n;
}

std::optional<std::string> PromtoolPath() {
  if (access("/usr/bin/promtool", X_OK) == 0) return std::string("/usr/bin/promtool");
  return std::nullopt;
}

CommandResult PromtoolCheckMetrics(const std::string& promtool, const std::string& exposition) {
  TempDir dir("virtgate-promtool");
  const std::string path = absl::StrCat(dir.path(), "/metrics.txt");
  std::ofstream(path) << exposition;
  return RunCommand({"/bin/sh", "-c", absl::StrCat("exec '", promtool, "' check metrics < '",
                                                   path, "'")});
}

}  // namespace virtgate::testing
