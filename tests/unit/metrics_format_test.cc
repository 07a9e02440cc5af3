// The Prometheus text format (0.0.4) as virtgated writes it: families with
// HELP and TYPE once, escaped label values and help, values that read back
// exactly, cumulative histogram buckets; the status-code labels; and
// --log_format=json lines. The whole exposition of a running server is
// checked by promtool in metrics_test.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/base/log.h"
#include "server/metrics/code_label.h"
#include "server/metrics/exposition.h"
#include "server/metrics/latency_histogram.h"

namespace virtgate {
namespace {

using ::testing::HasSubstr;

TEST(ExpositionTest, FamilyHasHelpAndTypeOnceThenItsSamples) {
  Exposition out;
  out.Family("virtgate_domains", "Domains by state.", Exposition::Type::kGauge);
  out.Sample("virtgate_domains", {{"state", "running"}}, 3);
  out.Sample("virtgate_domains", {{"state", "shutoff"}}, 0);
  out.Family("virtgate_up", "Up.", Exposition::Type::kCounter);
  out.Sample("virtgate_up", 1);
  EXPECT_EQ(out.text(),
            "# HELP virtgate_domains Domains by state.\n"
            "# TYPE virtgate_domains gauge\n"
            "virtgate_domains{state=\"running\"} 3\n"
            "virtgate_domains{state=\"shutoff\"} 0\n"
            "# HELP virtgate_up Up.\n"
            "# TYPE virtgate_up counter\n"
            "virtgate_up 1\n");
}

TEST(ExpositionTest, LabelValuesAndHelpAreEscaped) {
  Exposition out;
  out.Family("m", "a \\ backslash\nand a \"quote\"", Exposition::Type::kGauge);
  out.Sample("m", {{"name", "vm \"one\"\\two\nthree"}, {"uuid", "x"}}, 1);
  EXPECT_EQ(out.text(),
            "# HELP m a \\\\ backslash\\nand a \"quote\"\n"
            "# TYPE m gauge\n"
            "m{name=\"vm \\\"one\\\"\\\\two\\nthree\",uuid=\"x\"} 1\n");
  // UTF-8 passes through unchanged.
  EXPECT_EQ(EscapeLabelValue("gäst-日本"), "gäst-日本");
}

TEST(ExpositionTest, ValuesReadBackExactly) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(-3), "-3");
  EXPECT_EQ(FormatValue(18446744073709551616.0), "1.8446744073709552e+19");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  for (double v : {0.1, 1.0 / 3, 5.2932e-05, 1796209049.23, 123456789.123456789}) {
    EXPECT_EQ(std::strtod(FormatValue(v).c_str(), nullptr), v) << FormatValue(v);
  }
}

TEST(ExpositionTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Exposition out;
  out.Family("d_seconds", "Durations.", Exposition::Type::kHistogram);
  out.Histogram("d_seconds", {{"method", "Get"}}, {0.1, 1}, {2, 0, 1}, 5.5);
  EXPECT_EQ(out.text(),
            "# HELP d_seconds Durations.\n"
            "# TYPE d_seconds histogram\n"
            "d_seconds_bucket{method=\"Get\",le=\"0.1\"} 2\n"
            "d_seconds_bucket{method=\"Get\",le=\"1\"} 2\n"
            "d_seconds_bucket{method=\"Get\",le=\"+Inf\"} 3\n"
            "d_seconds_sum{method=\"Get\"} 5.5\n"
            "d_seconds_count{method=\"Get\"} 3\n");
}

TEST(LatencyHistogramTest, AnObservationOnABoundCountsInThatBucket) {
  LatencyHistogram h;
  const std::vector<double>& bounds = LatencyHistogram::Bounds();
  h.Observe(absl::Milliseconds(1));      // le="0.001": its own bound
  h.Observe(absl::Microseconds(1001));   // the next bucket
  h.Observe(absl::Seconds(3600));        // above every bound
  h.Observe(-absl::Seconds(1));          // a clock step back counts as 0
  ASSERT_EQ(h.counts().size(), bounds.size() + 1);
  const size_t ms = std::find(bounds.begin(), bounds.end(), 0.001) - bounds.begin();
  EXPECT_EQ(h.counts()[0], 1u);
  EXPECT_EQ(h.counts()[ms], 1u);
  EXPECT_EQ(h.counts()[ms + 1], 1u);
  EXPECT_EQ(h.counts().back(), 1u);
  EXPECT_EQ(h.count(), 4u);
  EXPECT_NEAR(h.sum_seconds(), 3600.002001, 1e-9);
}

TEST(CodeLabelTest, SpellsCodesAsGoGrpcPrometheusDoes) {
  EXPECT_EQ(CodeLabel(0), "OK");
  EXPECT_EQ(CodeLabel(3), "InvalidArgument");
  EXPECT_EQ(CodeLabel(5), "NotFound");
  EXPECT_EQ(CodeLabel(8), "ResourceExhausted");
  EXPECT_EQ(CodeLabel(16), "Unauthenticated");
  EXPECT_EQ(CodeLabel(17), "Unknown");
  EXPECT_EQ(CodeLabel(-1), "Unknown");
}

TEST(LogFormatTest, JsonLinesAreOneEscapedObject) {
  const absl::Time t = absl::FromUnixMillis(1796209049123);
  EXPECT_EQ(FormatLogLine(LogFormat::kText, LogLevel::kWarning, t, "libvirt is gone"),
            "2026-12-02T10:57:29.123Z WARN virtgated: libvirt is gone\n");
  EXPECT_EQ(FormatLogLine(LogFormat::kJson, LogLevel::kInfo, t,
                          "domain \"a\\b\"\nnext\tline \x01"),
            "{\"time\":\"2026-12-02T10:57:29.123Z\",\"level\":\"INFO\",\"logger\":\"virtgated\","
            "\"message\":\"domain \\\"a\\\\b\\\"\\nnext\\tline \\u0001\"}\n");
  // Valid UTF-8 passes; any byte that is not part of it becomes U+FFFD
  // (a lone continuation byte, an overlong form, a truncated sequence).
  auto message = [&](absl::string_view text) {
    const std::string line = FormatLogLine(LogFormat::kJson, LogLevel::kInfo, t, text);
    const size_t start = line.find("\"message\":\"") + 11;
    return line.substr(start, line.size() - start - 3);  // without "}\n
  };
  EXPECT_EQ(message("g\xc3\xa4st \xf0\x9f\x98\x80"), "g\xc3\xa4st \xf0\x9f\x98\x80");
  EXPECT_EQ(message("a\xff" "b"), "a\\ufffdb");
  EXPECT_EQ(message("\xc0\xaf"), "\\ufffd\\ufffd");
  EXPECT_EQ(message("x\xe2\x82"), "x\\ufffd\\ufffd");
  EXPECT_EQ(message("\xed\xa0\x80"), "\\ufffd\\ufffd\\ufffd");  // a surrogate
  LogFormat format;
  EXPECT_TRUE(ParseLogFormat("JSON", &format));
  EXPECT_EQ(format, LogFormat::kJson);
  EXPECT_TRUE(ParseLogFormat("text", &format));
  EXPECT_EQ(format, LogFormat::kText);
  EXPECT_FALSE(ParseLogFormat("xml", &format));
}

}  // namespace
}  // namespace virtgate
