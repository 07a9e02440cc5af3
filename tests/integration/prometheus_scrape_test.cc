// A real Prometheus (Debian's prometheus package) scrapes the real
// virtgated (a child process) serving a private libvirtd with 1,001
// domains: its query API then returns `up == 1` for virtgated and, for
// every state, the number of domains libvirt itself reports in it, and one
// virtgate_domain_info series per domain; and README "Monitoring"'s example
// queries, run as written, answer.
#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"
#include "tests/support/child_process.h"
#include "tests/support/files.h"
#include "tests/support/http_get.h"
#include "tests/support/loopback.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/server_process.h"
#include "tests/support/test_domains.h"
#include "tests/support/wait_for.h"

namespace virtgate {
namespace {

using testing::HttpGet;
using testing::PrivateLibvirtd;
using testing::ServerProcess;
using testing::WaitFor;

constexpr char kPrometheus[] = "/usr/bin/prometheus";
constexpr int kDomains = 1000;  // beside the test driver's own "test"

// virtgated's state labels, by virDomainState.
const char* const kStates[] = {"nostate", "running", "blocked",  "paused",
                               "shutdown", "shutoff", "crashed", "pmsuspended"};

// The PromQL lines of README "Monitoring"'s ```promql block.
std::vector<std::string> ReadmeQueries() {
  const std::string readme = testing::ReadFile(VIRTGATE_SOURCE_DIR "/README.md");
  std::vector<std::string> out;
  const size_t start = readme.find("```promql\n");
  if (start == std::string::npos) return out;
  const size_t end = readme.find("```", start + 10);
  for (absl::string_view line :
       absl::StrSplit(readme.substr(start + 10, end - start - 10), '\n', absl::SkipEmpty())) {
    if (!absl::StartsWith(line, "#")) out.emplace_back(line);
  }
  return out;
}

// A Prometheus server of the test's own: loopback only, data in a temp dir,
// scraping `target` every second.
class PrometheusProcess {
 public:
  // Prometheus cannot pick a free port itself: it gets one that was free a
  // moment ago, and another if something took it meanwhile.
  static absl::StatusOr<std::unique_ptr<PrometheusProcess>> Start(const std::string& target) {
    absl::StatusOr<std::unique_ptr<PrometheusProcess>> p;
    for (int attempt = 0; attempt < 3; ++attempt) {
      p = StartOnce(target);
      if (p.ok() || p.status().code() != absl::StatusCode::kAborted) break;
    }
    return p;
  }

 private:
  static absl::StatusOr<std::unique_ptr<PrometheusProcess>> StartOnce(const std::string& target) {
    std::unique_ptr<PrometheusProcess> p(new PrometheusProcess());
    const int port = testing::FreeLoopbackPort();
    if (port == 0) return absl::InternalError("no free port on 127.0.0.1");
    p->address_ = absl::StrCat("127.0.0.1:", port);
    const std::string config = absl::StrCat(p->dir_.path(), "/prometheus.yml");
    std::ofstream(config) << "global:\n"
                             "  scrape_interval: 1s\n"
                             "  scrape_timeout: 1s\n"
                             "scrape_configs:\n"
                             "  - job_name: virtgate\n"
                             "    static_configs:\n"
                             "      - targets: ['" << target << "']\n";
    p->log_path_ = absl::StrCat(p->dir_.path(), "/prometheus.log");
    const int log = open(p->log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    testing::ChildOptions o;
    o.argv = {kPrometheus, absl::StrCat("--config.file=", config),
              absl::StrCat("--storage.tsdb.path=", p->dir_.path(), "/data"),
              absl::StrCat("--web.listen-address=", p->address_), "--log.level=warn"};
    o.log_fd = log;
    absl::StatusOr<pid_t> pid = testing::SpawnChild(o);
    close(log);
    if (!pid.ok()) return pid.status();
    p->pid_ = *pid;
    std::optional<int> exited;
    const bool ready = WaitFor(
        [&] {
          exited = testing::WaitForExit(p->pid_, absl::Now());
          if (exited.has_value()) return true;
          absl::StatusOr<testing::HttpResponse> r = HttpGet(p->address_, "/-/ready",
                                                            absl::Seconds(1));
          return r.ok() && r->status == 200;
        },
        absl::Seconds(60));
    if (exited.has_value()) {
      p->pid_ = -1;
      const std::string log = p->Log();
      const std::string why = absl::StrCat("prometheus ended (",
                                           testing::DescribeWaitStatus(*exited), "): ", log);
      return absl::StrContains(log, "address already in use") ? absl::AbortedError(why)
                                                              : absl::InternalError(why);
    }
    if (!ready) return absl::DeadlineExceededError(absl::StrCat("not ready: ", p->Log()));
    return p;
  }

 public:
  ~PrometheusProcess() {
    if (pid_ > 0) testing::StopChild(pid_, absl::Seconds(10));
  }

  // The value of an instant query that returns one series; nullopt while it
  // returns none.
  std::optional<double> Query(const std::string& promql) {
    absl::StatusOr<testing::HttpResponse> r =
        HttpGet(address_, absl::StrCat("/api/v1/query?query=", testing::UrlEncode(promql)));
    if (!r.ok() || r->status != 200) return std::nullopt;
    last_answer_ = r->body;
    // {"status":"success","data":{"resultType":"vector","result":[{"metric":
    // {...},"value":[1796209049.123,"500"]}]}}
    const size_t at = r->body.find("\"value\":[");
    if (at == std::string::npos) return std::nullopt;
    const size_t open = r->body.find(",\"", at);
    const size_t close = r->body.find('"', open + 2);
    double value = 0;
    if (open == std::string::npos || close == std::string::npos ||
        !absl::SimpleAtod(r->body.substr(open + 2, close - open - 2), &value)) {
      return std::nullopt;
    }
    return value;
  }
  // An instant query's series by the values of `labels` ("/"-joined):
  // {"running": 501, ...} or {"GetDomain/NotFound": 0.05, ...}.
  std::map<std::string, double> QueryBy(const std::string& promql,
                                        const std::vector<std::string>& labels) {
    std::map<std::string, double> out;
    absl::StatusOr<testing::HttpResponse> r =
        HttpGet(address_, absl::StrCat("/api/v1/query?query=", testing::UrlEncode(promql)));
    if (!r.ok() || r->status != 200) return out;
    last_answer_ = r->body;
    // ... {"metric":{"grpc_code":"NotFound",...},"value":[1796209049.1,"0.25"]} ...
    const std::string& body = r->body;
    for (size_t at = body.find("{\"metric\":{"); at != std::string::npos;
         at = body.find("{\"metric\":{", at + 1)) {
      const size_t labels_end = body.find('}', at + 11);
      const size_t v = body.find("\"value\":[", labels_end);
      if (labels_end == std::string::npos || v == std::string::npos) continue;
      std::vector<std::string> key;
      for (const std::string& label : labels) {
        const std::string k = absl::StrCat("\"", label, "\":\"");
        const size_t found = body.find(k, at);
        if (found == std::string::npos || found > labels_end) break;
        const size_t start = found + k.size();
        key.push_back(body.substr(start, body.find('"', start) - start));
      }
      const size_t open = body.find(",\"", v);
      const size_t close = body.find('"', open + 2);
      double value = 0;
      if (key.size() == labels.size() &&
          absl::SimpleAtod(body.substr(open + 2, close - open - 2), &value)) {
        out[absl::StrJoin(key, "/")] = value;
      }
    }
    return out;
  }
  const std::string& last_answer() const { return last_answer_; }
  std::string Log() const { return testing::ReadFile(log_path_); }

 private:
  PrometheusProcess() = default;
  testing::TempDir dir_{"virtgate-prometheus"};
  std::string address_;
  std::string log_path_;
  std::string last_answer_;
  pid_t pid_ = -1;
};

TEST(PrometheusScrapeTest, PrometheusSeesTheDomainCountsLibvirtReports) {
  if (access(kPrometheus, X_OK) != 0) {
    GTEST_SKIP() << kPrometheus << " is missing (Debian package prometheus)";
  }
  std::unique_ptr<PrivateLibvirtd> daemon;
  ConnectHandle admin;
  if (absl::Status s = testing::StartWithAdmin(&daemon, &admin);
      s.code() == absl::StatusCode::kFailedPrecondition) {
    GTEST_SKIP() << s;
  } else {
    ASSERT_TRUE(s.ok()) << s;
  }
  // Half of them running.
  ASSERT_TRUE(testing::DefineDomains(admin.get(), "vm", kDomains, 2).ok());
  absl::StatusOr<std::map<std::string, testing::TruthEntry>> truth =
      testing::GroundTruth(admin.get());
  ASSERT_TRUE(truth.ok()) << truth.status();
  ASSERT_EQ(truth->size(), kDomains + 1u);
  std::map<std::string, int> by_state;
  for (const char* state : kStates) by_state[state] = 0;
  for (const auto& [uuid, entry] : *truth) ++by_state[kStates[entry.state]];

  ServerProcess::Config config;
  config.libvirt_uri = daemon->uri();
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = (*server)->MetricsAddress();
  ASSERT_FALSE(target.empty()) << (*server)->Log();
  absl::StatusOr<std::unique_ptr<PrometheusProcess>> prometheus = PrometheusProcess::Start(target);
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();
  PrometheusProcess& p = **prometheus;

  // Once Prometheus has scraped virtgated, and its samples are queryable.
  ASSERT_TRUE(WaitFor([&] { return p.Query("up{job=\"virtgate\"}") == 1.0; }, absl::Seconds(60)))
      << p.last_answer() << "\nprometheus log:\n" << p.Log();
  // virtgated serves once calls reach libvirt; its first listing of every
  // domain may finish a scrape or two later.
  const std::string by_state_query = "sum by (state) (virtgate_domains{job=\"virtgate\"})";
  const std::map<std::string, double> expected(by_state.begin(), by_state.end());
  EXPECT_TRUE(
      WaitFor([&] { return p.QueryBy(by_state_query, {"state"}) == expected; }, absl::Seconds(60)));
  EXPECT_EQ(p.QueryBy(by_state_query, {"state"}), expected) << p.last_answer();
  EXPECT_EQ(p.Query("count(virtgate_domain_info{job=\"virtgate\"})"), kDomains + 1.0)
      << p.last_answer();
  EXPECT_EQ(p.Query("count(virtgate_domain_info{state=\"running\"})"), by_state["running"])
      << p.last_answer();
  EXPECT_EQ(p.Query("virtgate_libvirt_up{job=\"virtgate\"}"), 1) << p.last_answer();

  // A failed call after Prometheus's first scrape: README's second query
  // sees the counter move.
  {
    grpc::ClientContext ctx;
    v1::GetDomainRequest req;
    req.set_name("no-such-domain");
    v1::Domain d;
    ASSERT_EQ((*server)->stub()->GetDomain(&ctx, req, &d).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  // README's queries, as written: the counts by state, and (once Prometheus
  // has scraped after the NOT_FOUND above) a rate of failed calls.
  const std::vector<std::string> queries = ReadmeQueries();
  ASSERT_EQ(queries.size(), 2u);
  EXPECT_EQ(p.QueryBy(queries[0], {"state"}), expected) << queries[0] << ": " << p.last_answer();
  EXPECT_TRUE(WaitFor(
      [&] {
        return p.QueryBy(queries[1], {"grpc_method", "grpc_code"})["GetDomain/NotFound"] > 0;
      },
      absl::Seconds(30)))
      << queries[1] << ": " << p.last_answer();
  // Every other method and code is there, at 0 (virtgated starts them at 0).
  EXPECT_EQ(p.QueryBy(queries[1], {"grpc_method", "grpc_code"})["ListDomains/Unavailable"], 0);
}

}  // namespace
}  // namespace virtgate
