// /metrics of an in-process server on test:///default, read over HTTP as
// Prometheus reads it: the exposition passes `promtool check metrics`;
// gRPC calls are counted by method and code as they end (NOT_FOUND,
// INVALID_ARGUMENT, RESOURCE_EXHAUSTED provoked here); libvirt calls by
// procedure and outcome; the domains by state and one series per domain
// (or none, with metrics_domain_series off); and the listener's own rules:
// plaintext is refused off loopback unless metrics_insecure, only GET and
// HEAD, only /metrics.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <libvirt/libvirt.h>

#include <memory>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/libvirt/event_loop.h"
#include "server/server.h"
#include "tests/support/files.h"
#include "tests/support/http_get.h"
#include "tests/support/metrics_text.h"
#include "tests/support/wait_for.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using ::testing::HasSubstr;
using testing::SampleValue;

constexpr char kGetDomain[] =
    "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"virtgate.v1.Hypervisor\","
    "grpc_method=\"GetDomain\",grpc_code=\"";
constexpr char kWatch[] =
    "grpc_server_handled_total{grpc_type=\"server_stream\",grpc_service=\"virtgate.v1."
    "Hypervisor\",grpc_method=\"WatchLifecycle\",grpc_code=\"";

Server::Options Options() {
  Server::Options o;
  o.libvirt_uri = "test:///default";
  o.listen = "127.0.0.1:0";
  o.metrics_listen = "127.0.0.1:0";
  return o;
}

std::chrono::system_clock::time_point In(absl::Duration d) {
  return absl::ToChronoTime(absl::Now() + d);
}

class MetricsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(EnsureLibvirtEventLoop().ok());
    // Keeps test:///default's domains for the whole suite.
    admin_ = virConnectOpen("test:///default");
    ASSERT_NE(admin_, nullptr);
  }
  static void TearDownTestSuite() { virConnectClose(admin_); }

  void Start(Server::Options options = Options()) {
    absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_FALSE(server_->metrics_address().empty());
    stub_ = v1::Hypervisor::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }
  std::string Scrape() {
    absl::StatusOr<std::string> text = testing::ScrapeMetrics(server_->metrics_address());
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : "";
  }
  grpc::Status GetDomain(const std::string& name, const std::string& uuid = "") {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(absl::Seconds(30)));
    v1::GetDomainRequest req;
    req.set_name(name);
    req.set_uuid(uuid);
    v1::Domain d;
    return stub_->GetDomain(&ctx, req, &d);
  }

  static virConnectPtr admin_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::Hypervisor::Stub> stub_;
};

virConnectPtr MetricsTest::admin_ = nullptr;

TEST_F(MetricsTest, ExpositionPassesPromtool) {
  Start();
  ASSERT_TRUE(GetDomain("test").ok());
  const std::optional<std::string> promtool = testing::PromtoolPath();
  if (!promtool) GTEST_SKIP() << "promtool is missing (Debian package prometheus)";
  const testing::CommandResult r = testing::PromtoolCheckMetrics(*promtool, Scrape());
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  // promtool prints lint problems (names, units, help) and still exits 0.
  EXPECT_EQ(r.out + r.err, "") << r.Describe();
}

// README "Monitoring" has a row for every metric family, and no row for
// one that does not exist.
TEST_F(MetricsTest, ReadmeListsEveryMetric) {
  Start();
  const std::string text = Scrape();
  const std::string readme = testing::ReadFile(VIRTGATE_SOURCE_DIR "/README.md");
  ASSERT_FALSE(readme.empty());
  std::set<std::string> served;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, "# TYPE ")) continue;
    const std::string name(line.substr(0, line.find(' ')));
    served.insert(name);
    EXPECT_THAT(readme, HasSubstr(absl::StrCat("| `", name, "` |")))
        << name << " is served but README \"Monitoring\" has no row for it";
  }
  const size_t table = readme.find("| metric | type | labels | meaning |");
  ASSERT_NE(table, std::string::npos);
  const size_t end = readme.find("\n\n", table);
  for (absl::string_view line : absl::StrSplit(readme.substr(table, end - table), '\n')) {
    if (!absl::ConsumePrefix(&line, "| `")) continue;
    const std::string name(line.substr(0, line.find('`')));
    EXPECT_TRUE(served.count(name)) << "README lists " << name << ", which is not served";
  }
}

TEST_F(MetricsTest, ServedAsPrometheusTextOnlyAtMetricsForGetAndHead) {
  Start();
  const std::string at = server_->metrics_address();
  absl::StatusOr<testing::HttpResponse> r = testing::HttpGet(at, "/metrics");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_THAT(r->body, HasSubstr("# TYPE virtgate_domains gauge\n"));
  r = testing::HttpRequest(at, "HEAD", "/metrics");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "");
  r = testing::HttpRequest(at, "POST", "/metrics");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->headers["allow"], "GET, HEAD");
  r = testing::HttpGet(at, "/metric");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 404);
  EXPECT_THAT(r->body, HasSubstr("/metrics"));
}

TEST_F(MetricsTest, CallsAreCountedByMethodAndCodeWhenTheyEnd) {
  Server::Options o = Options();
  o.watch_limits.max_watches_per_peer = 1;
  Start(o);
  // Every method and code is there from the start, at 0: a code's first
  // call is then an increase rate() sees.
  EXPECT_EQ(SampleValue(Scrape(), absl::StrCat(kGetDomain, "NotFound\"}")), 0);
  ASSERT_EQ(GetDomain("test").error_code(), grpc::StatusCode::OK);
  ASSERT_EQ(GetDomain("no-such-domain").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_EQ(GetDomain("no-such-domain-either").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_EQ(GetDomain("", "not-a-uuid").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // One watch is the client's limit: a second is refused.
  grpc::ClientContext first_ctx;
  v1::WatchLifecycleRequest req;
  req.set_send_initial_state(true);
  auto first = stub_->WatchLifecycle(&first_ctx, req);
  v1::WatchLifecycleResponse m;
  ASSERT_TRUE(first->Read(&m));
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(absl::Seconds(30)));
    auto second = stub_->WatchLifecycle(&ctx, req);
    while (second->Read(&m)) {
    }
    ASSERT_EQ(second->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  std::string text = Scrape();
  EXPECT_EQ(SampleValue(text, absl::StrCat(kGetDomain, "OK\"}")), 1) << text;
  EXPECT_EQ(SampleValue(text, absl::StrCat(kGetDomain, "NotFound\"}")), 2);
  EXPECT_EQ(SampleValue(text, absl::StrCat(kGetDomain, "InvalidArgument\"}")), 1);
  EXPECT_EQ(SampleValue(text, absl::StrCat(kWatch, "ResourceExhausted\"}")), 1);
  EXPECT_EQ(SampleValue(text, "virtgate_watch_streams"), 1);
  EXPECT_EQ(SampleValue(text,
                        "grpc_server_handling_seconds_count{grpc_type=\"unary\",grpc_service="
                        "\"virtgate.v1.Hypervisor\",grpc_method=\"GetDomain\"}"),
            4);
  // The open watch counts once it ends: cancelled by its client.
  first_ctx.TryCancel();
  while (first->Read(&m)) {
  }
  first->Finish();
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        text = Scrape();
        return SampleValue(text, absl::StrCat(kWatch, "Canceled\"}")) == 1.0 &&
               SampleValue(text, "virtgate_watch_streams") == 0.0;
      },
      absl::Seconds(10)))
      << text;
}

// A client can call any path; gRPC answers UNIMPLEMENTED. Such calls are
// counted under "unknown", never under the name the client made up.
TEST_F(MetricsTest, UnknownMethodsAddNoSeries) {
  Start();
  grpc::GenericStub generic(
      grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(absl::Seconds(30)));
    grpc::Slice empty_message("");  // a valid (empty) message, which a default ByteBuffer is not
    grpc::ByteBuffer request(&empty_message, 1);
    grpc::ByteBuffer response;
    grpc::Status s;
    absl::Notification done;
    generic.UnaryCall(&ctx, absl::StrCat("/virtgate.v1.Hypervisor/MadeUp", i),
                      grpc::StubOptions(), &request, &response, [&](grpc::Status status) {
                        s = std::move(status);
                        done.Notify();
                      });
    done.WaitForNotification();
    ASSERT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
  const std::string text = Scrape();
  EXPECT_THAT(text, ::testing::Not(HasSubstr("MadeUp")));
  // (gRPC serves an unknown path with its generic handler: a bidi stream.)
  EXPECT_EQ(SampleValue(text, "grpc_server_handled_total{grpc_type=\"bidi_stream\",grpc_service="
                              "\"unknown\",grpc_method=\"unknown\",grpc_code=\"Unimplemented\"}"),
            3)
      << text;
}

TEST_F(MetricsTest, LibvirtCallsAreCountedByProcedureAndOutcome) {
  Start();
  const std::string by_uuid =
      "virtgate_libvirt_calls_total{procedure=\"virDomainLookupByUUIDString\",code=\"OK\"}";
  const std::string by_name =
      "virtgate_libvirt_calls_total{procedure=\"virDomainLookupByName\",code=\"NotFound\"}";
  std::string text = Scrape();
  const double found_before = SampleValue(text, by_uuid).value_or(0);
  EXPECT_EQ(SampleValue(text, by_name), std::nullopt) << text;
  // FRESH reads go to libvirt: a domain the cache knows is looked up by its
  // UUID, an unknown name by that name.
  auto fresh = [&](const std::string& name) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(absl::Seconds(30)));
    v1::GetDomainRequest req;
    req.set_name(name);
    req.set_consistency(v1::READ_CONSISTENCY_FRESH);
    v1::Domain d;
    return stub_->GetDomain(&ctx, req, &d).error_code();
  };
  ASSERT_EQ(fresh("test"), grpc::StatusCode::OK);
  ASSERT_EQ(fresh("no-such-domain"), grpc::StatusCode::NOT_FOUND);
  text = Scrape();
  EXPECT_EQ(SampleValue(text, by_uuid), found_before + 1) << text;
  EXPECT_EQ(SampleValue(text, by_name), 1) << text;
  EXPECT_EQ(SampleValue(text,
                        "virtgate_libvirt_calls_in_flight{procedure=\"virDomainLookupByName\"}"),
            0);
  EXPECT_EQ(SampleValue(text, "virtgate_libvirt_call_duration_seconds_count{procedure="
                              "\"virDomainLookupByName\"}"),
            1);
  EXPECT_EQ(SampleValue(text, "virtgate_libvirt_up{uri=\"test:///default\"}"), 1);
  EXPECT_EQ(SampleValue(text, "virtgate_events_up"), 1);
}

TEST_F(MetricsTest, DomainsByStateAndOneSeriesPerDomainFromTheCache) {
  Start();
  const std::string text = Scrape();
  // test:///default: one domain, "test", running.
  EXPECT_EQ(SampleValue(text, "virtgate_domains{state=\"running\"}"), 1) << text;
  EXPECT_EQ(SampleValue(text, "virtgate_domains{state=\"shutoff\"}"), 0);
  EXPECT_EQ(SampleValue(text,
                        "virtgate_domain_info{uuid=\"6695eb01-f6a4-8304-79aa-97f2502e193f\","
                        "name=\"test\",state=\"running\",persistent=\"true\"}"),
            1);
  EXPECT_EQ(testing::CountSamples(text, "virtgate_domain_info"), 1);
  EXPECT_EQ(SampleValue(text, "virtgate_build_info{version=\"" VIRTGATE_VERSION "\"}"), 1);
  EXPECT_GT(SampleValue(text, "process_resident_memory_bytes").value_or(0), 0);
  EXPECT_GT(SampleValue(text, "process_open_fds").value_or(0), 0);
  EXPECT_GT(SampleValue(text, "process_start_time_seconds").value_or(0),
            absl::ToUnixSeconds(absl::Now()) - 3600);
}

TEST_F(MetricsTest, PerDomainSeriesCanBeTurnedOff) {
  Server::Options o = Options();
  o.metrics_domain_series = false;
  Start(o);
  const std::string text = Scrape();
  EXPECT_EQ(testing::CountSamples(text, "virtgate_domain_info"), 0) << text;
  EXPECT_EQ(SampleValue(text, "virtgate_domains{state=\"running\"}"), 1);
}

TEST_F(MetricsTest, PlaintextOffLoopbackNeedsMetricsInsecure) {
  Server::Options o = Options();
  o.metrics_listen = "0.0.0.0:0";
  absl::StatusOr<std::unique_ptr<Server>> refused = Server::BuildAndStart(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("refusing to serve /metrics in plaintext on non-loopback address "
                        "0.0.0.0:0"));
  EXPECT_THAT(refused.status().message(), HasSubstr("--metrics_insecure"));
  o.metrics_insecure = true;
  Start(o);
  EXPECT_THAT(server_->metrics_address(), ::testing::StartsWith("0.0.0.0:"));
}

TEST_F(MetricsTest, BadOrTakenAddressesAreRefusedNamingTheFlag) {
  Server::Options o = Options();
  o.metrics_listen = "unix:/tmp/virtgate-metrics.sock";
  absl::StatusOr<std::unique_ptr<Server>> refused = Server::BuildAndStart(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("--metrics_listen"));
  EXPECT_THAT(refused.status().message(), HasSubstr("TCP only"));
  Start();
  o.metrics_listen = server_->metrics_address();  // taken by the first server
  refused = Server::BuildAndStart(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(),
              HasSubstr(absl::StrCat("--metrics_listen=", o.metrics_listen,
                                     ": cannot listen: Address already in use")));
}

}  // namespace
}  // namespace virtgate
