// /metrics of the real virtgated (a child process) against a private
// libvirtd that the tests stop (SIGSTOP) and kill: a scrape never touches
// libvirt, so it answers at once while libvirtd is stopped, and says what is
// going on: calls stuck in libvirt past their deadline during the stall,
// reconnects and a lost event stream after a kill, lifecycle events by type.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/support/metrics_text.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/server_process.h"
#include "tests/support/wait_for.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using testing::PrivateLibvirtd;
using testing::SampleValue;
using testing::ServerProcess;
using testing::WaitFor;

class MetricsStallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<PrivateLibvirtd>> d = PrivateLibvirtd::Start();
    if (d.status().code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << d.status();
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    ServerProcess::Config config;
    config.libvirt_uri = daemon_->uri();
    // Quick to notice a dead daemon and to reopen; slow enough (3 s) that a
    // stall of a few seconds is a stall, not a loss.
    config.extra_flags = {"--keepalive_interval=1", "--keepalive_count=3",
                          "--reconnect_max_backoff=500ms"};
    absl::StatusOr<std::unique_ptr<ServerProcess>> s = ServerProcess::Start(config);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    address_ = server_->MetricsAddress();
    ASSERT_FALSE(address_.empty()) << server_->Log();
  }
  void TearDown() override {
    if (daemon_) daemon_->Resume();  // never leave it stopped
  }

  std::string Scrape(absl::Duration timeout = absl::Seconds(10)) {
    absl::StatusOr<std::string> text = testing::ScrapeMetrics(address_, timeout);
    return text.ok() ? *text : absl::StrCat("scrape failed: ", text.status().ToString());
  }
  // Polls until `series` reaches at least `value`; the last scrape in *text.
  bool WaitAtLeast(const std::string& series, double value, std::string* text) {
    return WaitFor(
        [&] {
          *text = Scrape();
          return SampleValue(*text, series).value_or(-1) >= value;
        },
        absl::Seconds(30));
  }

  std::unique_ptr<PrivateLibvirtd> daemon_;
  std::unique_ptr<ServerProcess> server_;
  std::string address_;
};

TEST_F(MetricsStallTest, ScrapesAnswerAtOnceWhileLibvirtdIsStoppedAndShowTheStuckCall) {
  daemon_->Pause();
  // A FRESH listing goes to libvirt, which does not answer: its worker is
  // stuck once the call's 1 s deadline passes.
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  v1::ListDomainsRequest req;
  req.set_consistency(v1::READ_CONSISTENCY_FRESH);
  v1::ListDomainsResponse response;
  const grpc::Status listed = server_->stub()->ListDomains(&ctx, req, &response);
  EXPECT_EQ(listed.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << listed.error_message();
  std::string text;
  EXPECT_TRUE(WaitAtLeast("virtgate_libvirt_calls_stuck", 1, &text)) << text;
  // Every scrape answers while libvirtd stays stopped; the quickest of ten
  // within 50 ms, the bound (one alone could meet a busy moment of a
  // shared machine; a scrape that waited on libvirt would never answer).
  std::vector<absl::Duration> took;
  for (int i = 0; i < 10; ++i) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::string> scraped = testing::ScrapeMetrics(address_, absl::Seconds(2));
    took.push_back(absl::Now() - start);
    ASSERT_TRUE(scraped.ok()) << "scrape " << i << " while libvirtd is stopped: "
                              << scraped.status();
    EXPECT_GE(SampleValue(*scraped, "virtgate_libvirt_calls_stuck").value_or(0), 1);
  }
  const absl::Duration quickest = *std::min_element(took.begin(), took.end());
  EXPECT_LE(quickest, absl::Milliseconds(50)) << absl::FormatDuration(quickest);
  std::cout << "scrape while libvirtd is stopped: quickest of 10 "
            << absl::FormatDuration(quickest) << "\n";

  daemon_->Resume();
  EXPECT_TRUE(WaitFor(
      [&] {
        text = Scrape();
        return SampleValue(text, "virtgate_libvirt_calls_stuck") == 0.0;
      },
      absl::Seconds(30)))
      << text;
}

TEST_F(MetricsStallTest, AKilledLibvirtdShowsAsLossAndReconnects) {
  std::string text = Scrape();
  EXPECT_EQ(SampleValue(text, "virtgate_libvirt_reconnects_total{connection=\"events\"}"), 0)
      << text;
  EXPECT_EQ(SampleValue(text, "virtgate_libvirt_reconnects_total{connection=\"calls\"}"), 0);
  EXPECT_EQ(SampleValue(text, "virtgate_events_lost_total"), 0);
  daemon_->Kill();
  EXPECT_TRUE(WaitFor(
      [&] {
        text = Scrape();
        return SampleValue(text, "virtgate_events_up") == 0.0 &&
               SampleValue(text, "virtgate_events_lost_total") == 1.0;
      },
      absl::Seconds(30)))
      << text;
  ASSERT_TRUE(daemon_->Restart().ok());
  EXPECT_TRUE(WaitAtLeast("virtgate_libvirt_reconnects_total{connection=\"events\"}", 1, &text))
      << text;
  EXPECT_TRUE(WaitAtLeast("virtgate_libvirt_reconnects_total{connection=\"calls\"}", 1, &text))
      << text;
  EXPECT_TRUE(WaitAtLeast("virtgate_events_up", 1, &text)) << text;
  EXPECT_EQ(SampleValue(text, "virtgate_libvirt_up{uri=\"" + daemon_->uri() + "\"}"), 1) << text;
}

TEST_F(MetricsStallTest, LifecycleEventsAreCountedByType) {
  const testing::CommandResult suspend = daemon_->Virsh({"suspend", "test"});
  ASSERT_EQ(suspend.exit_code, 0) << suspend.Describe();
  std::string text;
  EXPECT_TRUE(WaitAtLeast("virtgate_libvirt_events_received_total{type=\"suspended\"}", 1, &text))
      << text;
  EXPECT_TRUE(WaitAtLeast("virtgate_domains{state=\"paused\"}", 1, &text)) << text;
  const testing::CommandResult resume = daemon_->Virsh({"resume", "test"});
  ASSERT_EQ(resume.exit_code, 0) << resume.Describe();
  EXPECT_TRUE(WaitAtLeast("virtgate_libvirt_events_received_total{type=\"resumed\"}", 1, &text))
      << text;
  EXPECT_EQ(SampleValue(text, "virtgate_libvirt_events_received_total{type=\"stopped\"}"), 0);
}

}  // namespace
}  // namespace virtgate
