// Watching lifecycle events end to end: a private libvirtd (test driver)
// whose domains virsh changes from outside, the real virtgated on it as a
// process, and as watchers the real `virtgatectl watch` process and the
// client library's WatchLifecycle in-process.
//
// A watch sees only events raised after it subscribed, and nothing tells a
// process outside the server when that happened. So every watch is first
// probed: the probe domain is started and destroyed until the watch reports
// it; from then on the watch is known to be live. Lines about the probe are
// ignored. At the end a fence domain is started and destroyed; once the
// watch reports the fence stopped, every event before it has been reported
// too (the stream is ordered), so "exactly these lines" needs no waiting.
//
// libvirtd keeps the test driver's state only while a client has it open:
// the suite's own virtgated does throughout, so tests that restart their own
// virtgated do not lose the domains.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <google/protobuf/util/json_util.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/child_process.h"
#include "tests/support/command.h"
#include "tests/support/files.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/server_process.h"
#include "tests/support/wait_for.h"
#include "tests/support/watch_recorder.h"
#include "virtgate/client.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {
namespace {

using testing::CapturedChild;
using testing::ChildOptions;
using testing::CommandResult;
using testing::DescribeWaitStatus;
using testing::kProcessDeadline;
using testing::kStartDeadline;
using testing::PrivateLibvirtd;
using testing::RunCtl;
using testing::ServerProcess;
using testing::TempDir;
using testing::VirtgatectlPath;
using testing::WaitFor;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::IsSupersetOf;
using ::testing::StartsWith;

constexpr char kLibvirtd[] = "/usr/sbin/libvirtd";
constexpr char kVirsh[] = "/usr/bin/virsh";

// Started and destroyed to learn that a watch is live, and to fence its
// output; both exist (shut off) for the whole suite.
constexpr char kProbe[] = "probe";
constexpr char kFence[] = "fence";
// How long one probe round waits for the watch to report it before the
// next round; only the number of rounds depends on it.
constexpr absl::Duration kProbeRound = absl::Milliseconds(300);
// Waits for something that is certain to happen soon.
constexpr absl::Duration kEventDeadline = absl::Seconds(20);

// What one watch line says, in table or JSON form alike.
struct Seen {
  std::string domain;  // Empty for markers.
  std::string what;    // "STARTED/booted", "INITIAL running", "synced", ...
  uint64_t sequence = 0;
};

std::string TypeWord(v1::LifecycleEventType type) {
  return std::string(absl::StripPrefix(v1::LifecycleEventType_Name(type), "LIFECYCLE_EVENT_TYPE_"));
}

std::string StateWord(v1::DomainState state) {
  return absl::AsciiStrToLower(absl::StripPrefix(v1::DomainState_Name(state), "DOMAIN_STATE_"));
}

// "2026-11-26T17:20:01.123Z"
bool LooksLikeUtcMillis(absl::string_view time) {
  absl::Time parsed;
  std::string error;
  return time.size() == 24 && absl::EndsWith(time, "Z") &&
         absl::ParseTime("%Y-%m-%d%ET%H:%M:%E3SZ", time, &parsed, &error);
}

// Parses one table line; nullopt (and a test failure) if it is malformed.
std::optional<Seen> ParseTableLine(const std::string& line) {
  std::vector<std::string> fields = absl::StrSplit(line, "  ");
  if (fields.size() < 2 || !LooksLikeUtcMillis(fields[0])) {
    ADD_FAILURE() << "malformed line: " << line;
    return std::nullopt;
  }
  Seen seen;
  if (absl::StartsWith(fields[1], "-- synced (seq=")) {
    seen.what = "synced";
    absl::string_view n = absl::StripPrefix(fields[1], "-- synced (seq=");
    if (!absl::SimpleAtoi(n.substr(0, n.find(')')), &seen.sequence)) ADD_FAILURE() << line;
    return seen;
  }
  if (absl::StartsWith(fields[1], "--")) {
    seen.what = fields[1];
    return seen;
  }
  if (fields.size() != 4 || !absl::StartsWith(fields[3], "seq=") ||
      !absl::SimpleAtoi(absl::StripPrefix(fields[3], "seq="), &seen.sequence)) {
    ADD_FAILURE() << "malformed line: " << line;
    return std::nullopt;
  }
  seen.domain = fields[1];
  seen.what = fields[2];
  return seen;
}

std::optional<Seen> ParseJsonLine(const std::string& line) {
  v1::WatchLifecycleResponse message;
  const auto parsed = google::protobuf::util::JsonStringToMessage(line, &message);
  if (!parsed.ok()) {
    ADD_FAILURE() << parsed.ToString() << ": " << line;
    return std::nullopt;
  }
  // One object per line, proto field names.
  EXPECT_THAT(line, AllOf(StartsWith("{"), HasSubstr("\"sequence\""), HasSubstr("\"epoch\"")));
  EXPECT_FALSE(message.epoch().empty()) << line;
  Seen seen;
  seen.sequence = message.sequence();
  if (message.has_event()) {
    if (!absl::StrContains(line, "\"domain_name\"")) ADD_FAILURE() << "field names: " << line;
    seen.domain = message.event().domain_name();
    seen.what = absl::StrCat(TypeWord(message.event().type()), "/", message.event().detail());
  } else if (message.has_initial()) {
    seen.domain = message.initial().domain().name();
    seen.what = absl::StrCat("INITIAL ", StateWord(message.initial().domain().state()));
  } else if (message.has_synced()) {
    seen.what = "synced";
  } else {
    seen.what = line;
  }
  return seen;
}

// A running `virtgatectl watch`, its stdout read line by line.
class WatchProcess {
 public:
  static absl::StatusOr<std::unique_ptr<WatchProcess>> Start(std::vector<std::string> args,
                                                             bool json) {
    std::unique_ptr<WatchProcess> w(new WatchProcess());
    w->json_ = json;
    ChildOptions options;
    options.argv = std::move(args);
    options.argv.insert(options.argv.begin(), VirtgatectlPath());
    absl::StatusOr<std::unique_ptr<CapturedChild>> child = CapturedChild::Start(options);
    if (!child.ok()) return child.status();
    w->child_ = *std::move(child);
    return w;
  }

  // The next stdout line, parsed; nullopt at `deadline` or end of output.
  std::optional<Seen> Next(absl::Time deadline) {
    while (true) {
      std::string& out = child_->out();
      const size_t newline = out.find('\n');
      if (newline != std::string::npos) {
        std::string line = out.substr(0, newline);
        out.erase(0, newline + 1);
        lines_.push_back(line);
        std::optional<Seen> seen = json_ ? ParseJsonLine(line) : ParseTableLine(line);
        if (seen.has_value()) return seen;
        continue;
      }
      if (!child_->stdout_open() || !child_->ReadSome(deadline)) return std::nullopt;
    }
  }

  // Waits until the watch reports the probe domain, probing in rounds.
  absl::Status WaitUntilLive(const PrivateLibvirtd& libvirtd) {
    const absl::Time deadline = absl::Now() + kStartDeadline;
    while (absl::Now() < deadline) {
      for (const char* action : {"start", "destroy"}) {
        CommandResult r = libvirtd.Virsh({action, kProbe});
        if (r.exit_code != 0) return absl::InternalError(r.Describe());
      }
      const absl::Time round_end = std::min(deadline, absl::Now() + kProbeRound);
      while (std::optional<Seen> seen = Next(round_end)) {
        if (seen->domain == kProbe) return absl::OkStatus();
      }
      if (!Running()) break;
    }
    return absl::DeadlineExceededError(absl::StrCat("the watch never reported the probe; ",
                                                    Transcript()));
  }

  // Starts and destroys the fence domain, and returns "DOMAIN WHAT" for
  // every line before the fence's STOPPED, leaving out probe and fence.
  std::vector<std::string> CollectUntilFence(const PrivateLibvirtd& libvirtd) {
    for (const char* action : {"start", "destroy"}) {
      CommandResult r = libvirtd.Virsh({action, kFence});
      EXPECT_EQ(r.exit_code, 0) << r.Describe();
    }
    std::vector<std::string> out;
    const absl::Time deadline = absl::Now() + kEventDeadline;
    while (std::optional<Seen> seen = Next(deadline)) {
      if (seen->domain == kFence && absl::StartsWith(seen->what, "STOPPED")) return out;
      if (seen->domain == kProbe || seen->domain == kFence) continue;
      out.push_back(absl::StrCat(seen->domain, " ", seen->what));
    }
    ADD_FAILURE() << "the fence never came; " << Transcript();
    return out;
  }

  bool Running() { return child_->Running(); }

  // Sends `signal` and waits for the exit; the wait status, or nullopt if
  // it did not exit in time. Reads what is left of stdout and stderr.
  std::optional<int> Stop(int signal) {
    if (Running() && !child_->Stop(signal, absl::Now() + kProcessDeadline).has_value()) {
      return std::nullopt;
    }
    child_->ReadToEnd(absl::Now() + kProcessDeadline);
    return child_->exit_status();
  }

  // Unread stdout (after Stop: everything printed after the last Next).
  const std::string& rest() const { return child_->out(); }
  const std::string& err() const { return child_->err(); }
  std::string Transcript() const {
    return absl::StrCat("stdout lines so far:\n", absl::StrJoin(lines_, "\n"), "\n",
                        child_->out(), "--- stderr:\n", child_->err());
  }

 private:
  WatchProcess() = default;

  bool json_ = false;
  std::unique_ptr<CapturedChild> child_;
  std::vector<std::string> lines_;
};

bool ExitedZero(std::optional<int> status) {
  return status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

std::string Describe(std::optional<int> status) {
  return status.has_value() ? DescribeWaitStatus(*status) : "still running";
}

using Recorder = testing::WatchRecorder;

// Probes until the watch reports the probe domain.
absl::Status WaitUntilLive(Recorder& recorder, const PrivateLibvirtd& libvirtd) {
  const absl::Time deadline = absl::Now() + kStartDeadline;
  while (absl::Now() < deadline) {
    for (const char* action : {"start", "destroy"}) {
      CommandResult r = libvirtd.Virsh({action, kProbe});
      if (r.exit_code != 0) return absl::InternalError(r.Describe());
    }
    if (recorder.WaitUntil(
            [](const Recorder::State& s) {
              return s.result.has_value() || Recorder::HasEventOf(s, kProbe);
            },
            kProbeRound)) {
      return recorder.With([](const Recorder::State& s) {
        return s.result.has_value()
                   ? absl::InternalError(absl::StrCat("the watch ended: ", s.result->ToString()))
                   : absl::OkStatus();
      });
    }
  }
  return absl::DeadlineExceededError("the watch never reported the probe");
}

// One libvirtd and one virtgated for the suite; each test uses domains of
// its own, and tests that kill a server start their own.
class WatchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (access(kLibvirtd, X_OK) != 0 || access(kVirsh, X_OK) != 0) return;  // SetUp skips.
    absl::StatusOr<std::unique_ptr<PrivateLibvirtd>> libvirtd = PrivateLibvirtd::Start();
    if (!libvirtd.ok()) {
      start_error_ = new std::string(libvirtd.status().ToString());
      return;
    }
    libvirtd_ = libvirtd->release();
    ServerProcess::Config config;
    config.libvirt_uri = libvirtd_->uri();
    config.target = absl::StrCat("unix:", libvirtd_->dir(), "/vg.sock");
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(config);
    if (!server.ok()) {
      start_error_ = new std::string(server.status().ToString());
      return;
    }
    server_ = server->release();
    // Defined only now: libvirtd forgets test-driver domains when the last
    // client disconnects, and the server is the client that stays.
    for (const char* name : {kProbe, kFence}) {
      CommandResult r = libvirtd_->Virsh({"define", libvirtd_->WriteDomainXml(name)});
      if (r.exit_code != 0) {
        start_error_ = new std::string(r.Describe());
        return;
      }
    }
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      absl::StatusOr<int> status = server_->Terminate();
      EXPECT_TRUE(status.ok()) << status.status();
    }
    delete server_;
    server_ = nullptr;
    delete libvirtd_;
    libvirtd_ = nullptr;
    delete start_error_;
    start_error_ = nullptr;
  }

  void SetUp() override {
    if (access(kLibvirtd, X_OK) != 0) {
      GTEST_SKIP() << kLibvirtd << " not found: apt-get install libvirt-daemon";
    }
    if (access(kVirsh, X_OK) != 0) {
      GTEST_SKIP() << kVirsh << " not found: apt-get install libvirt-clients";
    }
    ASSERT_EQ(start_error_, nullptr) << *start_error_;
    ASSERT_NE(server_, nullptr);
  }

  static void Virsh(std::vector<std::string> args) {
    const CommandResult r = libvirtd_->Virsh(args);
    ASSERT_EQ(r.exit_code, 0) << absl::StrJoin(args, " ") << ": " << r.Describe();
  }

  // define, start, suspend, resume, destroy, undefine: the six lines.
  static void FullLifecycle(const std::string& name) {
    Virsh({"define", libvirtd_->WriteDomainXml(name)});
    for (const char* action : {"start", "suspend", "resume", "destroy", "undefine"}) {
      Virsh({action, name});
    }
  }

  static std::vector<std::string> FullLifecycleLines(const std::string& name) {
    return {name + " DEFINED/added",       name + " STARTED/booted",
            name + " SUSPENDED/paused",    name + " RESUMED/unpaused",
            name + " STOPPED/destroyed",   name + " UNDEFINED/removed"};
  }

  static std::unique_ptr<WatchProcess> StartWatch(std::vector<std::string> args,
                                                  bool json = false) {
    args.insert(args.begin(), {"--server", server_->target(), "watch"});
    absl::StatusOr<std::unique_ptr<WatchProcess>> w = WatchProcess::Start(args, json);
    EXPECT_TRUE(w.ok()) << w.status();
    return w.ok() ? *std::move(w) : nullptr;
  }

  static PrivateLibvirtd* libvirtd_;
  static ServerProcess* server_;
  static std::string* start_error_;
};

PrivateLibvirtd* WatchTest::libvirtd_ = nullptr;
ServerProcess* WatchTest::server_ = nullptr;
std::string* WatchTest::start_error_ = nullptr;

TEST_F(WatchTest, TablePrintsOneLinePerEventInOrder) {
  std::unique_ptr<WatchProcess> watch = StartWatch({});
  ASSERT_NE(watch, nullptr);
  ASSERT_TRUE(watch->WaitUntilLive(*libvirtd_).ok()) << watch->Transcript();

  FullLifecycle("table1");
  EXPECT_THAT(watch->CollectUntilFence(*libvirtd_),
              ::testing::ElementsAreArray(FullLifecycleLines("table1")))
      << watch->Transcript();

  const std::optional<int> status = watch->Stop(SIGINT);
  EXPECT_TRUE(ExitedZero(status)) << Describe(status) << "\n" << watch->Transcript();
  EXPECT_THAT(watch->err(), IsEmpty());
}

TEST_F(WatchTest, JsonPrintsOneResponsePerLine) {
  std::unique_ptr<WatchProcess> watch = StartWatch({"-o", "json"}, /*json=*/true);
  ASSERT_NE(watch, nullptr);
  ASSERT_TRUE(watch->WaitUntilLive(*libvirtd_).ok()) << watch->Transcript();

  FullLifecycle("json1");
  EXPECT_THAT(watch->CollectUntilFence(*libvirtd_),
              ::testing::ElementsAreArray(FullLifecycleLines("json1")))
      << watch->Transcript();

  // SIGTERM ends it as cleanly as SIGINT.
  const std::optional<int> status = watch->Stop(SIGTERM);
  EXPECT_TRUE(ExitedZero(status)) << Describe(status) << "\n" << watch->Transcript();
  EXPECT_THAT(watch->err(), IsEmpty());
}

TEST_F(WatchTest, DomainAndTypeFiltersDeliverExactlyTheMatchingLines) {
  constexpr char kFbUuid[] = "5f1a3c2e-7b4d-4e1f-9a0b-c1d2e3f4a5b6";
  // By name and by UUID (32 hex digits, the dashless form), plus the
  // probe and the fence so the test can tell when the watch is live/done.
  std::unique_ptr<WatchProcess> by_domain =
      StartWatch({"--domain", "fa", "--domain", "5F1A3C2E7B4D4E1F9A0BC1D2E3F4A5B6", "--domain",
                  kProbe, "--domain", kFence});
  // Repeated and comma-separated types.
  std::unique_ptr<WatchProcess> by_type = StartWatch({"--type", "started", "--type=stopped,crashed"});
  ASSERT_NE(by_domain, nullptr);
  ASSERT_NE(by_type, nullptr);
  ASSERT_TRUE(by_domain->WaitUntilLive(*libvirtd_).ok()) << by_domain->Transcript();
  ASSERT_TRUE(by_type->WaitUntilLive(*libvirtd_).ok()) << by_type->Transcript();

  Virsh({"define", libvirtd_->WriteDomainXml("fa")});
  Virsh({"define", libvirtd_->WriteDomainXml("fb", kFbUuid)});
  Virsh({"define", libvirtd_->WriteDomainXml("fc")});
  for (const char* action : {"start", "destroy", "undefine"}) {
    for (const char* name : {"fc", "fb", "fa"}) Virsh({action, name});
  }

  EXPECT_THAT(by_domain->CollectUntilFence(*libvirtd_),
              ElementsAre("fa DEFINED/added", "fb DEFINED/added", "fb STARTED/booted",
                          "fa STARTED/booted", "fb STOPPED/destroyed", "fa STOPPED/destroyed",
                          "fb UNDEFINED/removed", "fa UNDEFINED/removed"))
      << by_domain->Transcript();
  EXPECT_THAT(by_type->CollectUntilFence(*libvirtd_),
              ElementsAre("fc STARTED/booted", "fb STARTED/booted", "fa STARTED/booted",
                          "fc STOPPED/destroyed", "fb STOPPED/destroyed", "fa STOPPED/destroyed"))
      << by_type->Transcript();

  for (WatchProcess* w : {by_domain.get(), by_type.get()}) {
    const std::optional<int> status = w->Stop(SIGINT);
    EXPECT_TRUE(ExitedZero(status)) << Describe(status) << "\n" << w->Transcript();
  }
}

TEST_F(WatchTest, InitialPrintsCurrentStatesThenSyncedThenEvents) {
  Virsh({"define", libvirtd_->WriteDomainXml("init1")});
  std::unique_ptr<WatchProcess> watch =
      StartWatch({"--initial", "--domain", "init1", "--domain", kFence});
  ASSERT_NE(watch, nullptr);

  std::vector<std::string> before_synced;
  bool synced = false;
  const absl::Time deadline = absl::Now() + kEventDeadline;
  while (std::optional<Seen> seen = watch->Next(deadline)) {
    if (seen->what == "synced") {
      synced = true;
      break;
    }
    before_synced.push_back(absl::StrCat(seen->domain, " ", seen->what));
  }
  ASSERT_TRUE(synced) << watch->Transcript();
  EXPECT_THAT(before_synced, ::testing::UnorderedElementsAre("init1 INITIAL shutoff",
                                                           "fence INITIAL shutoff"));
  // Synced came, so the watch is live: events follow.
  Virsh({"start", "init1"});
  Virsh({"destroy", "init1"});
  Virsh({"undefine", "init1"});
  EXPECT_THAT(watch->CollectUntilFence(*libvirtd_),
              ElementsAre("init1 STARTED/booted", "init1 STOPPED/destroyed",
                          "init1 UNDEFINED/removed"))
      << watch->Transcript();
  const std::optional<int> status = watch->Stop(SIGINT);
  EXPECT_TRUE(ExitedZero(status)) << Describe(status) << "\n" << watch->Transcript();
}

TEST_F(WatchTest, DeadServerKeepsRetryingSayingWhyOnceUntilInterrupted) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  absl::StatusOr<std::unique_ptr<WatchProcess>> watch = WatchProcess::Start(
      {"--server", absl::StrCat("unix:", dir.path(), "/nobody-listens.sock"), "watch"}, false);
  ASSERT_TRUE(watch.ok()) << watch.status();
  // Nothing can make it end but a signal; give it time to have retried a few
  // times (100ms, 200ms, 400ms, ...) and check that it is still there.
  EXPECT_FALSE(WaitFor([&] { return !(*watch)->Running(); }, absl::Seconds(1)))
      << (*watch)->Transcript();
  const std::optional<int> status = (*watch)->Stop(SIGINT);
  EXPECT_TRUE(ExitedZero(status)) << Describe(status) << "\n" << (*watch)->Transcript();
  EXPECT_THAT((*watch)->rest(), IsEmpty());  // stdout: events only
  // stderr: why, once (not once per retry), so it does not look like a
  // server with nothing to report.
  const std::vector<std::string> lines = absl::StrSplit((*watch)->err(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << (*watch)->err();
  EXPECT_THAT(lines[0], HasSubstr("nobody-listens.sock"));
  EXPECT_THAT(lines[0], HasSubstr("retrying until interrupted"));
}

TEST(WatchUsageTest, BadWatchCommandLinesExitTwo) {
  const std::string server = "unix:/nonexistent/virtgate.sock";
  struct Case {
    std::vector<std::string> args;
    const char* mentions;
  } cases[] = {
      {{"watch", "--type", "bogus"}, "bogus"},
      {{"watch", "--type", "started,unspecified"}, "unspecified"},
      {{"watch", "--domain="}, "--domain"},
      {{"watch", "--state", "running"}, "--state applies to list only"},
      {{"list", "--type", "started"}, "--type applies to watch only"},
      {{"get", "x", "--initial"}, "--initial applies to watch only"},
      {{"watch", "extra"}, "usage: virtgatectl watch"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = c.args;
    args.insert(args.begin(), {"--server", server});
    const CommandResult r = RunCtl(args);
    EXPECT_EQ(r.exit_code, 2) << absl::StrJoin(c.args, " ") << ": " << r.Describe();
    EXPECT_THAT(r.out, IsEmpty());
    EXPECT_EQ(r.ErrLines().size(), 1u) << r.Describe();
    EXPECT_THAT(r.err, AllOf(StartsWith("virtgatectl: "), HasSubstr(c.mentions))) << r.Describe();
  }
  const CommandResult help = RunCtl({"help"});
  EXPECT_THAT(help.out, AllOf(HasSubstr("watch"), HasSubstr("--domain"), HasSubstr("--type"),
                              HasSubstr("--initial"), HasSubstr("pmsuspended"),
                              HasSubstr("resynced")));
}

// --- The client library's WatchLifecycle, in-process.

// Every event/connection (epoch, sequence) delivered at most once, and in
// increasing order within an epoch.
void ExpectNoRepeats(const std::vector<v1::WatchLifecycleResponse>& messages) {
  std::string epoch;
  uint64_t last = 0;
  for (const v1::WatchLifecycleResponse& m : messages) {
    if (!m.has_event() && !m.has_connection()) continue;
    if (m.epoch() == epoch) {
      EXPECT_GT(m.sequence(), last) << "repeated or reordered: " << m.ShortDebugString();
    }
    epoch = m.epoch();
    last = m.sequence();
  }
}

TEST_F(WatchTest, LibraryResyncsWhenTheServerRestartsWithANewEpoch) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  ServerProcess::Config config;
  config.libvirt_uri = libvirtd_->uri();
  config.target = absl::StrCat("unix:", dir.path(), "/vg.sock");
  absl::StatusOr<std::unique_ptr<ServerProcess>> first = ServerProcess::Start(config);
  ASSERT_TRUE(first.ok()) << first.status();

  ClientOptions options;
  options.watch_initial_backoff = absl::Milliseconds(20);
  options.watch_max_backoff = absl::Milliseconds(300);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(config.target, options);
  ASSERT_TRUE(client.ok()) << client.status();
  Recorder recorder;
  recorder.Start(**client, v1::WatchLifecycleRequest());
  ASSERT_TRUE(WaitUntilLive(recorder, *libvirtd_).ok());

  Virsh({"define", libvirtd_->WriteDomainXml("resync1")});
  ASSERT_TRUE(recorder.WaitUntil(
      [](const Recorder::State& s) { return Recorder::HasEventOf(s, "resync1"); },
      kEventDeadline));
  const std::string old_epoch =
      recorder.With([](const Recorder::State& s) { return s.messages.back().epoch(); });

  // The server goes away: the watch's stream ends UNAVAILABLE, and it
  // keeps trying while nothing listens.
  absl::StatusOr<int> ended = (*first)->Terminate();
  ASSERT_TRUE(ended.ok()) << ended.status();
  ASSERT_TRUE(recorder.WaitUntil(
      [](const Recorder::State& s) { return s.retries.size() >= 2 || s.result.has_value(); },
      kEventDeadline));
  recorder.With([](const Recorder::State& s) {
    EXPECT_FALSE(s.result.has_value()) << s.result->ToString();
    EXPECT_THAT(std::string(s.retries[0].why.message()), HasSubstr("shutting down"));
    EXPECT_TRUE(s.resyncs.empty());
  });

  // A new instance on the same socket has a new epoch: resuming fails with
  // OUT_OF_RANGE, and the watch resyncs.
  absl::StatusOr<std::unique_ptr<ServerProcess>> second = ServerProcess::Start(config);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(recorder.WaitUntil(
      [](const Recorder::State& s) { return !s.resyncs.empty() || s.result.has_value(); },
      kEventDeadline));
  const Recorder::Resync resync = recorder.With([](const Recorder::State& s) {
    return s.resyncs.empty() ? Recorder::Resync{} : s.resyncs[0];
  });
  ASSERT_FALSE(resync.why.empty()) << "the watch ended instead: "
                                   << recorder.With([](const Recorder::State& s) {
                                        return s.result->ToString();
                                      });
  EXPECT_THAT(resync.why, AllOf(HasSubstr("epoch"), HasSubstr(old_epoch)));

  // Then initial states of every domain there is, synced, live events.
  ASSERT_TRUE(recorder.WaitUntil(
      [&](const Recorder::State& s) {
        if (s.result.has_value()) return true;
        for (size_t i = resync.at; i < s.messages.size(); ++i) {
          if (s.messages[i].has_synced()) return true;
        }
        return false;
      },
      kEventDeadline));
  const std::optional<absl::Status> result =
      recorder.With([](const Recorder::State& s) { return s.result; });
  ASSERT_FALSE(result.has_value()) << *result;
  std::vector<std::string> initial;
  std::string new_epoch;
  uint64_t synced_at = 0;
  recorder.With([&](const Recorder::State& s) {
    for (size_t i = resync.at; i < s.messages.size(); ++i) {
      const v1::WatchLifecycleResponse& m = s.messages[i];
      if (m.has_synced()) {
        new_epoch = m.epoch();
        synced_at = m.sequence();
        break;
      }
      EXPECT_TRUE(m.has_initial()) << "before synced: " << m.ShortDebugString();
      initial.push_back(m.initial().domain().name());
    }
  });
  EXPECT_NE(new_epoch, old_epoch);
  EXPECT_THAT(initial, IsSupersetOf({"resync1", kProbe, kFence, "test"}));

  const size_t before_start =
      recorder.With([](const Recorder::State& s) { return s.messages.size(); });
  Virsh({"start", "resync1"});
  ASSERT_TRUE(recorder.WaitUntil(
      [&](const Recorder::State& s) { return Recorder::HasEventOf(s, "resync1", before_start); },
      kEventDeadline));
  recorder.With([&](const Recorder::State& s) {
    const v1::WatchLifecycleResponse& m = s.messages.back();
    EXPECT_EQ(m.event().type(), v1::LIFECYCLE_EVENT_TYPE_STARTED) << m.ShortDebugString();
    EXPECT_EQ(m.epoch(), new_epoch);
    EXPECT_GT(m.sequence(), synced_at);
    EXPECT_EQ(s.resyncs.size(), 1u);
    ExpectNoRepeats(s.messages);
  });

  recorder.session().Cancel();
  ASSERT_TRUE(recorder.WaitUntil([](const Recorder::State& s) { return s.result.has_value(); },
                                 absl::Seconds(2)));
  EXPECT_TRUE(recorder.With([](const Recorder::State& s) { return *s.result; }).ok());
  Virsh({"destroy", "resync1"});
  Virsh({"undefine", "resync1"});
}

// A watch that began before the server's first event has nothing to resume
// from but "the start of the epoch" (sequence 0), which it cannot express.
// With send_initial_state the caller gets the initial states once per
// subscription: at the start, and again after the resync.
TEST_F(WatchTest, LibraryWithInitialStateResyncsAfterAQuietServerRestarts) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  ServerProcess::Config config;
  config.libvirt_uri = libvirtd_->uri();
  config.target = absl::StrCat("unix:", dir.path(), "/vg.sock");
  absl::StatusOr<std::unique_ptr<ServerProcess>> first = ServerProcess::Start(config);
  ASSERT_TRUE(first.ok()) << first.status();

  ClientOptions options;
  options.watch_initial_backoff = absl::Milliseconds(20);
  options.watch_max_backoff = absl::Milliseconds(300);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(config.target, options);
  ASSERT_TRUE(client.ok()) << client.status();
  Recorder recorder;
  v1::WatchLifecycleRequest request;
  request.set_send_initial_state(true);
  request.add_domain_names(kProbe);
  recorder.Start(**client, request);

  const auto synced_count = [](const Recorder::State& s) {
    size_t n = 0;
    for (const v1::WatchLifecycleResponse& m : s.messages) n += m.has_synced() ? 1 : 0;
    return n;
  };
  ASSERT_TRUE(recorder.WaitUntil(
      [&](const Recorder::State& s) { return synced_count(s) >= 1 || s.result.has_value(); },
      kEventDeadline));
  const std::optional<absl::Status> early =
      recorder.With([](const Recorder::State& s) { return s.result; });
  ASSERT_FALSE(early.has_value()) << *early;
  std::string old_epoch;
  recorder.With([&](const Recorder::State& s) {
    ASSERT_EQ(s.messages.size(), 2u);
    EXPECT_EQ(s.messages[0].initial().domain().name(), kProbe);
    EXPECT_TRUE(s.messages[1].has_synced());
    // Nothing happened on this server yet: the snapshot is at sequence 0.
    EXPECT_EQ(s.messages[1].sequence(), 0u);
    old_epoch = s.messages[1].epoch();
  });

  absl::StatusOr<int> ended = (*first)->Terminate();
  ASSERT_TRUE(ended.ok()) << ended.status();
  absl::StatusOr<std::unique_ptr<ServerProcess>> second = ServerProcess::Start(config);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(recorder.WaitUntil(
      [&](const Recorder::State& s) { return synced_count(s) >= 2 || s.result.has_value(); },
      kEventDeadline));

  // Live events follow the second snapshot.
  Virsh({"start", kProbe});
  Virsh({"destroy", kProbe});
  ASSERT_TRUE(recorder.WaitUntil(
      [](const Recorder::State& s) {
        return s.result.has_value() ||
               (!s.messages.empty() && s.messages.back().has_event() &&
                s.messages.back().event().type() == v1::LIFECYCLE_EVENT_TYPE_STOPPED);
      },
      kEventDeadline));
  recorder.With([&](const Recorder::State& s) {
    ASSERT_FALSE(s.result.has_value()) << *s.result;
    ASSERT_EQ(s.resyncs.size(), 1u);
    EXPECT_THAT(s.resyncs[0].why, AllOf(HasSubstr("epoch"), HasSubstr(old_epoch)));
    EXPECT_EQ(s.resyncs[0].at, 2u);
    std::vector<std::string> what;
    for (const v1::WatchLifecycleResponse& m : s.messages) {
      if (m.has_initial()) what.push_back("initial " + m.initial().domain().name());
      if (m.has_synced()) what.push_back("synced");
      if (m.has_event()) what.push_back(TypeWord(m.event().type()));
    }
    EXPECT_THAT(what, ElementsAre("initial probe", "synced", "initial probe", "synced",
                                  "STARTED", "STOPPED"));
    EXPECT_NE(s.messages.back().epoch(), old_epoch);
  });
}

TEST_F(WatchTest, LibraryKeepsRetryingWhileTheServerIsDownAndCancelIsPrompt) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  ServerProcess::Config config;
  config.libvirt_uri = libvirtd_->uri();
  config.target = absl::StrCat("unix:", dir.path(), "/vg.sock");
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();

  // Default backoff: 100ms doubling to 5s.
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(config.target);
  ASSERT_TRUE(client.ok()) << client.status();
  Recorder recorder;
  recorder.Start(**client, v1::WatchLifecycleRequest());
  ASSERT_TRUE(WaitUntilLive(recorder, *libvirtd_).ok());

  absl::StatusOr<int> ended = (*server)->Terminate();
  ASSERT_TRUE(ended.ok()) << ended.status();
  // Five failed attempts take at least 0.75s (50ms + 100ms + 200ms + 400ms
  // at the lowest jitter); the next wait is 0.8s-1.6s.
  ASSERT_TRUE(recorder.WaitUntil(
      [](const Recorder::State& s) { return s.retries.size() >= 5 || s.result.has_value(); },
      kEventDeadline));
  const absl::Time cancel_at = absl::Now();
  recorder.session().Cancel();
  ASSERT_TRUE(recorder.WaitUntil([](const Recorder::State& s) { return s.result.has_value(); },
                                 absl::Seconds(2)))
      << "WatchLifecycle did not return within 2s of Cancel()";
  const absl::Duration took = absl::Now() - cancel_at;
  recorder.With([&](const Recorder::State& s) {
    EXPECT_TRUE(s.result->ok()) << *s.result;
    ASSERT_GE(s.retries.size(), 5u);
    EXPECT_THAT(std::string(s.retries[0].why.message()), HasSubstr("shutting down"));
    for (size_t i = 1; i < s.retries.size(); ++i) {
      EXPECT_EQ(s.retries[i].why.code(), absl::StatusCode::kUnavailable) << s.retries[i].why;
      EXPECT_TRUE(IsConnectionError(s.retries[i].why)) << s.retries[i].why;
    }
    // Cancel cut the backoff wait short rather than waiting it out.
    EXPECT_LT(took, s.retries.back().delay) << "took " << took;
    EXPECT_TRUE(s.resyncs.empty());
  });
}

}  // namespace
}  // namespace virtgate
