// Layer 1 of the test support (absl only): reading virtgated's /metrics as
// Prometheus would, and checking it with Prometheus' own promtool.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/support/command.h"

namespace virtgate::testing {

// GET http://<address>/metrics: the body, or why not (a status other than
// 200 is an error).
absl::StatusOr<std::string> ScrapeMetrics(const std::string& address,
                                          absl::Duration timeout = absl::Seconds(10));

// The value of the sample written exactly as `series` ("name" or
// "name{a=\"x\",b=\"y\"}", labels in the order virtgated writes them), if
// the exposition has it.
std::optional<double> SampleValue(const std::string& exposition, const std::string& series);

// Samples of metric `name` (any labels), e.g. every virtgate_domain_info.
int CountSamples(const std::string& exposition, const std::string& name);

// Where Debian's prometheus package puts promtool, if it is installed.
std::optional<std::string> PromtoolPath();
// `promtool check metrics` on `exposition` (its stdin).
CommandResult PromtoolCheckMetrics(const std::string& promtool, const std::string& exposition);

}  // namespace virtgate::testing
