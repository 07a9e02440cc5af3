// Process-level test of virtgatectl: the real virtgated runs as a child
// process on libvirt's test:///default driver, listening on a unix socket in
// a private temporary directory, and the real virtgatectl binary runs
// against it. Assertions are on what a user sees: stdout, the one stderr
// line, and the exit status. Also checks the server side a CLI user relies
// on: reflection (what grpcurl lists) and exit 0 on SIGTERM.
//
// Readiness and exits are waited for as conditions with deadlines, never
// with fixed sleeps.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "virtgate/client.h"
#include "virtgate/v1/hypervisor.pb.h"

extern char** environ;

namespace virtgate {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

// The domain libvirt's test:///default driver always has, running.
constexpr char kTestDomain[] = "test";
constexpr char kTestUuid[] = "6695eb01-f6a4-8304-79aa-97f2502e193f";

// Generous: only a broken build or a hung process comes near them.
constexpr absl::Duration kStartDeadline = absl::Seconds(30);
constexpr absl::Duration kProcessDeadline = absl::Seconds(30);
// How often a wait re-checks its condition; no outcome depends on it.
constexpr absl::Duration kPollInterval = absl::Milliseconds(10);

// Environment for children: ours, minus what would change their behaviour
// behind the test's back (a default server, gRPC's own stderr logging).
std::vector<std::string> ChildEnvironment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view entry = *e;
    if (absl::StartsWith(entry, "VIRTGATE_SERVER=") || absl::StartsWith(entry, "GRPC_VERBOSITY=") ||
        absl::StartsWith(entry, "GRPC_TRACE=")) {
      continue;
    }
    env.emplace_back(entry);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

// execve's view of `strings`, which must outlive it.
std::vector<char*> CStrings(std::vector<std::string>* strings) {
  std::vector<char*> out;
  for (std::string& s : *strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// fork + execve with stdout/stderr on the given descriptors and stdin from
// /dev/null. The child dies with the test (PR_SET_PDEATHSIG), so a crashed
// test leaves no daemon behind. Everything the child touches between fork
// and exec is prepared before the fork (the parent has gRPC threads).
absl::StatusOr<pid_t> Spawn(std::vector<std::string> argv, std::vector<std::string> env,
                            int stdout_fd, int stderr_fd) {
  std::vector<char*> c_argv = CStrings(&argv);
  std::vector<char*> c_env = CStrings(&env);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    const int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 || dup2(stdout_fd, STDOUT_FILENO) < 0 ||
        dup2(stderr_fd, STDERR_FILENO) < 0) {
      _exit(127);
    }
    execve(c_argv[0], c_argv.data(), c_env.data());
    static constexpr char kExecFailed[] = "exec failed\n";
    (void)!write(STDERR_FILENO, kExecFailed, sizeof(kExecFailed) - 1);
    _exit(127);
  }
  return pid;
}

// Waits for `pid` to exit until `deadline`; nullopt if it is still running.
std::optional<int> WaitForExit(pid_t pid, absl::Time deadline) {
  while (true) {
    int status = 0;
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) return status;
    if (done < 0 && errno != EINTR) return std::nullopt;
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(kPollInterval);
  }
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  return absl::StrCat("wait status ", status);
}

struct CommandResult {
  int exit_code = -1;  // -1: did not exit normally (see error).
  std::string out;
  std::string err;
  std::string error;  // Why the run itself failed, for assertion messages.

  std::vector<std::string> ErrLines() const {
    return absl::StrSplit(absl::StripSuffix(err, "\n"), '\n', absl::SkipEmpty());
  }
  std::string Describe() const {
    return absl::StrCat("exit ", exit_code, error, "\n--- stdout:\n", out, "--- stderr:\n", err);
  }
};

// Runs a program to completion, capturing stdout and stderr. Both pipes are
// drained together so a chatty child can never block on a full pipe.
CommandResult Run(std::vector<std::string> argv, const std::vector<std::string>& extra_env = {}) {
  CommandResult result;
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    result.error = absl::StrCat(" (pipe: ", std::strerror(errno), ")");
    return result;
  }
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    result.error = absl::StrCat(" (pipe: ", std::strerror(errno), ")");
    close(out_pipe[0]);
    close(out_pipe[1]);
    return result;
  }
  absl::StatusOr<pid_t> pid =
      Spawn(std::move(argv), ChildEnvironment(extra_env), out_pipe[1], err_pipe[1]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  const absl::Time deadline = absl::Now() + kProcessDeadline;
  if (pid.ok()) {
    pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    std::string* sinks[2] = {&result.out, &result.err};
    int open_fds = 2;
    while (open_fds > 0 && absl::Now() < deadline) {
      const int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now())) + 1;
      if (poll(fds, 2, ms) < 0 && errno != EINTR) break;
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0) continue;
        char buffer[4096];
        const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
        if (n > 0) {
          sinks[i]->append(buffer, static_cast<size_t>(n));
        } else if (n == 0 || errno != EINTR) {
          fds[i].fd = -1;  // EOF (or error): stop polling it.
          --open_fds;
        }
      }
    }
    std::optional<int> status = WaitForExit(*pid, deadline);
    if (!status.has_value()) {
      kill(*pid, SIGKILL);
      status = WaitForExit(*pid, absl::InfiniteFuture());
      result.error = " (timed out and killed)";
    }
    if (status.has_value() && WIFEXITED(*status)) {
      result.exit_code = WEXITSTATUS(*status);
    } else if (status.has_value()) {
      absl::StrAppend(&result.error, " (", DescribeWaitStatus(*status), ")");
    }
  } else {
    result.error = absl::StrCat(" (", pid.status().message(), ")");
  }
  close(out_pipe[0]);
  close(err_pipe[0]);
  return result;
}

CommandResult RunCtl(std::vector<std::string> args, const std::vector<std::string>& env = {}) {
  args.insert(args.begin(), VIRTGATECTL_PATH);
  return Run(std::move(args), env);
}

// A private directory under /tmp (short: unix socket paths are limited to
// 107 bytes), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/virtgatectl_test.XXXXXX";
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A virtgated child process serving test:///default on a unix socket.
class ServerProcess {
 public:
  // Starts virtgated and waits until its health check says SERVING.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start() {
    std::unique_ptr<ServerProcess> server(new ServerProcess());
    if (server->dir_.path().empty()) {
      return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
    }
    server->target_ = absl::StrCat("unix:", server->dir_.path(), "/sock");
    server->log_path_ = absl::StrCat(server->dir_.path(), "/virtgated.log");
    const int log_fd = open(server->log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                            0600);
    if (log_fd < 0) return absl::InternalError(absl::StrCat("open log: ", std::strerror(errno)));
    absl::StatusOr<pid_t> pid = Spawn(
        {VIRTGATED_PATH, "--libvirt_uri=test:///default", absl::StrCat("--listen=", server->target_),
         "--shutdown_grace=5s"},
        ChildEnvironment({}), log_fd, log_fd);
    close(log_fd);
    if (!pid.ok()) return pid.status();
    server->pid_ = *pid;
    absl::Status serving = server->WaitUntilServing();
    if (!serving.ok()) return serving;
    return server;
  }

  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      WaitForExit(pid_, absl::InfiniteFuture());
    }
  }

  // Sends SIGTERM and returns the wait status once it exited.
  absl::StatusOr<int> Terminate() {
    if (kill(pid_, SIGTERM) != 0) {
      return absl::InternalError(absl::StrCat("kill: ", std::strerror(errno)));
    }
    // The server's grace period is 5s; it must be done well within this.
    std::optional<int> status = WaitForExit(pid_, absl::Now() + kProcessDeadline);
    if (!status.has_value()) {
      return absl::DeadlineExceededError(
          absl::StrCat("virtgated did not exit after SIGTERM; log:\n", Log()));
    }
    pid_ = -1;
    return *status;
  }

  const std::string& target() const { return target_; }
  const std::string& dir() const { return dir_.path(); }

  std::string Log() const {
    std::ifstream in(log_path_);
    std::stringstream contents;
    contents << in.rdbuf();
    return contents.str();
  }

 private:
  ServerProcess() = default;

  // Polls the health service through the client library until it answers
  // SERVING, the process dies, or the deadline passes. Each attempt uses a
  // new Client: a channel whose first connect failed (socket not there yet)
  // waits out gRPC's reconnect backoff (1s, 1.6s, ...) before trying again.
  absl::Status WaitUntilServing() {
    ClientOptions options;
    options.timeout = absl::Seconds(2);
    const absl::Time deadline = absl::Now() + kStartDeadline;
    absl::Status last = absl::UnknownError("never asked");
    while (absl::Now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return absl::InternalError(absl::StrCat("virtgated ended before serving (",
                                                DescribeWaitStatus(status), "); log:\n", Log()));
      }
      absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(target_, options);
      if (!client.ok()) return client.status();
      absl::StatusOr<bool> serving = (*client)->CheckHealth();
      if (serving.ok() && *serving) return absl::OkStatus();
      last = serving.ok() ? absl::UnavailableError("NOT_SERVING") : serving.status();
      absl::SleepFor(kPollInterval);
    }
    return absl::DeadlineExceededError(
        absl::StrCat("virtgated not SERVING within ", absl::FormatDuration(kStartDeadline),
                     " (last: ", last.ToString(), "); log:\n", Log()));
  }

  TempDir dir_;
  std::string target_;
  std::string log_path_;
  pid_t pid_ = -1;
};

// The rows of a `list` table, each split into its columns.
std::vector<std::vector<std::string>> TableRows(const std::string& table) {
  std::vector<std::vector<std::string>> rows;
  for (absl::string_view line : absl::StrSplit(table, '\n', absl::SkipEmpty())) {
    rows.push_back(absl::StrSplit(line, ' ', absl::SkipEmpty()));
  }
  return rows;
}

// The value of "key:" in `get`/`host` output.
std::optional<std::string> FieldOf(const std::string& text, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, absl::StrCat(key, ":"))) {
      return std::string(absl::StripAsciiWhitespace(line.substr(key.size() + 1)));
    }
  }
  return std::nullopt;
}

// One virtgated for all tests of this suite: they only read, and starting
// one per test would add nothing but time.
class VirtgatectlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
    if (server.ok()) {
      server_ = server->release();
    } else {
      start_error_ = new std::string(server.status().ToString());
    }
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      absl::StatusOr<int> status = server_->Terminate();
      EXPECT_TRUE(status.ok()) << status.status();
      if (status.ok()) {
        EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
            << DescribeWaitStatus(*status) << "; log:\n" << server_->Log();
      }
    }
    delete server_;
    server_ = nullptr;
    delete start_error_;
    start_error_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr) << (start_error_ != nullptr ? *start_error_ : "");
  }

  // virtgatectl with --server pointing at the suite's server.
  static CommandResult Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", server_->target()});
    return RunCtl(std::move(args));
  }

  static ServerProcess* server_;
  static std::string* start_error_;
};

ServerProcess* VirtgatectlTest::server_ = nullptr;
std::string* VirtgatectlTest::start_error_ = nullptr;

TEST_F(VirtgatectlTest, ListPrintsTableWithRunningTestDomain) {
  const CommandResult r = Ctl({"list"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.err, IsEmpty());
  const std::vector<std::vector<std::string>> rows = TableRows(r.out);
  ASSERT_FALSE(rows.empty()) << r.Describe();
  EXPECT_THAT(rows[0], ElementsAre("NAME", "UUID", "ID", "STATE", "VCPUS", "MEMORY"));
  const std::vector<std::string>* test_row = nullptr;
  for (const std::vector<std::string>& row : rows) {
    if (!row.empty() && row[0] == kTestDomain) test_row = &row;
  }
  ASSERT_NE(test_row, nullptr) << r.out;
  // MEMORY is "<number> <unit>", so the row splits into seven words.
  EXPECT_THAT(*test_row, ElementsAre(kTestDomain, kTestUuid, testing::_, "running", testing::_,
                                     testing::_, testing::EndsWith("iB")))
      << r.out;
}

TEST_F(VirtgatectlTest, ListJsonIsOneListDomainsResponse) {
  const CommandResult r = Ctl({"list", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  v1::ListDomainsResponse response;
  const auto parsed = google::protobuf::util::JsonStringToMessage(r.out, &response);
  ASSERT_TRUE(parsed.ok()) << parsed.ToString() << "\n" << r.out;
  EXPECT_THAT(response.next_page_token(), IsEmpty());
  bool found = false;
  for (const v1::Domain& domain : response.domains()) {
    if (domain.name() != kTestDomain) continue;
    found = true;
    EXPECT_EQ(domain.uuid(), kTestUuid);
    EXPECT_EQ(domain.state(), v1::DOMAIN_STATE_RUNNING);
  }
  EXPECT_TRUE(found) << r.out;
  // Proto field names, and default values printed too.
  EXPECT_THAT(r.out, AllOf(HasSubstr("\"memory_kib\""), HasSubstr("\"autostart\"")));
}

TEST_F(VirtgatectlTest, ListFiltersReachTheServer) {
  auto names = [](const CommandResult& r) {
    std::vector<std::string> out;
    std::vector<std::vector<std::string>> rows = TableRows(r.out);
    for (size_t i = 1; i < rows.size(); ++i) out.push_back(rows[i][0]);
    return out;
  };
  // Options after the command, both value spellings, repeated and
  // comma-separated states, and one domain per page.
  CommandResult r = Ctl({"list", "--active", "--state=running,paused", "--page-size", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(names(r), Contains(kTestDomain));

  r = Ctl({"list", "--inactive"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(names(r), testing::Not(Contains(kTestDomain)));

  r = Ctl({"list", "--state", "shutoff", "--state", "paused"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(names(r), testing::Not(Contains(kTestDomain)));
}

TEST_F(VirtgatectlTest, GetByNameShowsAllFields) {
  const CommandResult r = Ctl({"get", kTestDomain});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.err, IsEmpty());
  EXPECT_EQ(FieldOf(r.out, "uuid"), kTestUuid) << r.out;
  EXPECT_EQ(FieldOf(r.out, "name"), kTestDomain) << r.out;
  EXPECT_EQ(FieldOf(r.out, "state"), "running") << r.out;
  for (const char* key : {"id", "state_reason", "persistent", "autostart", "vcpus",
                          "memory_kib", "max_memory_kib", "cpu_time_ns", "stale"}) {
    EXPECT_TRUE(FieldOf(r.out, key).has_value()) << key << " missing in\n" << r.out;
  }
}

TEST_F(VirtgatectlTest, GetByUuidInAnyForm) {
  const std::string upper = absl::AsciiStrToUpper(kTestUuid);
  const std::string plain = absl::StrReplaceAll(kTestUuid, {{"-", ""}});
  for (const std::string& uuid : {std::string(kTestUuid), upper, plain}) {
    const CommandResult r = Ctl({"get", uuid});
    ASSERT_EQ(r.exit_code, 0) << uuid << ": " << r.Describe();
    EXPECT_EQ(FieldOf(r.out, "uuid"), kTestUuid) << r.out;
    EXPECT_EQ(FieldOf(r.out, "name"), kTestDomain) << r.out;
  }
  const CommandResult r = Ctl({"get", plain, "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  v1::Domain domain;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &domain).ok()) << r.out;
  EXPECT_EQ(domain.name(), kTestDomain);
  EXPECT_EQ(domain.uuid(), kTestUuid);
}

TEST_F(VirtgatectlTest, GetMissingDomainFailsWithOneLine) {
  const CommandResult r = Ctl({"get", "nope"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_THAT(r.out, IsEmpty());
  ASSERT_EQ(r.ErrLines().size(), 1u) << r.Describe();
  EXPECT_THAT(r.err, StartsWith("virtgatectl: "));
  EXPECT_THAT(absl::AsciiStrToLower(r.err), AllOf(HasSubstr("not found"), HasSubstr("nope")));
}

TEST_F(VirtgatectlTest, HostShowsTestHypervisor) {
  CommandResult r = Ctl({"host"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(FieldOf(r.out, "hypervisor_type"), "TEST") << r.out;
  EXPECT_EQ(FieldOf(r.out, "uri"), "test:///default") << r.out;
  EXPECT_EQ(FieldOf(r.out, "connection.up"), "yes") << r.out;

  r = Ctl({"host", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  v1::HostInfo info;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &info).ok()) << r.out;
  EXPECT_EQ(info.hypervisor_type(), "TEST");
  EXPECT_TRUE(info.connection().up());
}

TEST_F(VirtgatectlTest, HealthPrintsServing) {
  CommandResult r = Ctl({"health"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "SERVING\n");
  EXPECT_THAT(r.err, IsEmpty());

  r = Ctl({"health", "virtgate.v1.Hypervisor"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "SERVING\n");

  // An unknown service is an error of the call (NOT_FOUND), not NOT_SERVING.
  r = Ctl({"health", "no.such.Service"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_THAT(r.out, IsEmpty());
  EXPECT_EQ(r.ErrLines().size(), 1u) << r.Describe();
}

TEST_F(VirtgatectlTest, ServerComesFromEnvironmentAndOptionsGoAnywhere) {
  CommandResult r = RunCtl({"health"}, {absl::StrCat("VIRTGATE_SERVER=", server_->target())});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "SERVING\n");

  r = RunCtl({"health", "--timeout=3s", absl::StrCat("--server=", server_->target())});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "SERVING\n");

  // --server beats the environment.
  r = RunCtl({"--server", server_->target(), "health"},
             {"VIRTGATE_SERVER=unix:/nonexistent/virtgate.sock"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

TEST_F(VirtgatectlTest, ReflectionListsServicesLikeGrpcurl) {
  namespace reflection = grpc::reflection::v1alpha;
  std::unique_ptr<reflection::ServerReflection::Stub> stub = reflection::ServerReflection::NewStub(
      grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  std::unique_ptr<grpc::ClientReaderWriter<reflection::ServerReflectionRequest,
                                           reflection::ServerReflectionResponse>>
      stream = stub->ServerReflectionInfo(&context);
  reflection::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->WritesDone());
  reflection::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  const grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(response.has_list_services_response()) << response.DebugString();
  std::vector<std::string> services;
  for (const reflection::ServiceResponse& service : response.list_services_response().service()) {
    services.push_back(service.name());
  }
  EXPECT_THAT(services, Contains("virtgate.v1.Hypervisor"));
  EXPECT_THAT(services, Contains("grpc.health.v1.Health"));
}

// --- Without a server.

void ExpectUnreachable(const CommandResult& r, const std::string& target,
                       absl::string_view reason) {
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_THAT(r.out, IsEmpty());
  EXPECT_EQ(r.err, absl::StrCat("virtgatectl: cannot reach ", target, ": ", reason, "\n"))
      << r.Describe();
}

TEST(VirtgatectlUnreachableTest, MissingUnixSocket) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string target = absl::StrCat("unix:", dir.path(), "/no-such.sock");
  ExpectUnreachable(RunCtl({"--server", target, "list"}), target, "no such file or directory");
  // The domain asked for is not blamed when nothing answered.
  ExpectUnreachable(RunCtl({"--server", target, "get", "nope"}), target,
                    "no such file or directory");
}

TEST(VirtgatectlUnreachableTest, ClosedTcpPort) {
  // A socket bound to a port but not listening: connections to it are
  // refused, and holding it means no other process can take the port
  // while the test runs (unlike a port bound and closed again).
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0)
      << std::strerror(errno);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const std::string target = absl::StrCat("127.0.0.1:", ntohs(address.sin_port));

  ExpectUnreachable(RunCtl({"--server", target, "host"}), target, "connection refused");
  ExpectUnreachable(RunCtl({"health", "--server", target}), target, "connection refused");

  // The library reports the same, and marks it as a connection error.
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(target);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<bool> serving = (*client)->CheckHealth();
  EXPECT_EQ(serving.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(serving.status().message(), absl::StrCat("cannot reach ", target, ": connection refused"));
  EXPECT_TRUE(IsConnectionError(serving.status()));
  close(fd);
}

// --- Usage errors: exit 2 and one line, before any connection is made.

void ExpectUsageError(const CommandResult& r, absl::string_view mentions) {
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_THAT(r.out, IsEmpty());
  ASSERT_EQ(r.ErrLines().size(), 1u) << r.Describe();
  EXPECT_THAT(r.err, AllOf(StartsWith("virtgatectl: "), HasSubstr(mentions)));
}

TEST(VirtgatectlUsageTest, BadCommandLinesExitTwo) {
  // No server runs at this address; usage errors must not need one.
  const std::string server = "unix:/nonexistent/virtgate.sock";
  ExpectUsageError(RunCtl({"--server", server, "frobnicate"}), "frobnicate");
  ExpectUsageError(RunCtl({"--server", server, "list", "--state", "bogus"}), "bogus");
  ExpectUsageError(RunCtl({"--server", server, "list", "--no-such-option"}), "--no-such-option");
  ExpectUsageError(RunCtl({"--server", server, "list", "--active", "--inactive"}), "--inactive");
  ExpectUsageError(RunCtl({"--server", server, "list", "--page-size", "-1"}), "page-size");
  ExpectUsageError(RunCtl({"--server", server, "--timeout", "soon", "list"}), "soon");
  ExpectUsageError(RunCtl({"--server", server, "-o", "yaml", "list"}), "yaml");
  ExpectUsageError(RunCtl({"--server", server, "get"}), "get");
  ExpectUsageError(RunCtl({"--server", server, "get", "a", "b"}), "get");
  ExpectUsageError(RunCtl({"--server", server, "host", "--active"}), "--active");
  ExpectUsageError(RunCtl({"--server"}), "--server");
}

TEST(VirtgatectlUsageTest, HelpAndMissingCommand) {
  CommandResult r = RunCtl({"help"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  for (const char* word : {"list", "get", "host", "health", "--server", "--timeout", "--output",
                           "--tls_ca", "--state", "--page-size", "VIRTGATE_SERVER"}) {
    EXPECT_THAT(r.out, HasSubstr(word));
  }
  EXPECT_THAT(r.err, IsEmpty());

  r = RunCtl({"list", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.out, HasSubstr("Usage:"));

  r = RunCtl({});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_THAT(r.out, IsEmpty());
  EXPECT_THAT(r.err, HasSubstr("Usage:"));
}

// --- Server lifecycle as a CLI user sees it.

TEST(VirtgatedShutdownTest, SigtermExitsZeroAndStopsServing) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = (*server)->target();
  const CommandResult before = RunCtl({"--server", target, "health"});
  ASSERT_EQ(before.exit_code, 0) << before.Describe();

  absl::StatusOr<int> status = (*server)->Terminate();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << DescribeWaitStatus(*status) << "; log:\n" << (*server)->Log();

  const CommandResult after = RunCtl({"--server", target, "health"});
  EXPECT_EQ(after.exit_code, 1) << after.Describe();
  EXPECT_THAT(after.err, StartsWith(absl::StrCat("virtgatectl: cannot reach ", target, ": ")));
  EXPECT_EQ(after.ErrLines().size(), 1u) << after.Describe();
}

}  // namespace
}  // namespace virtgate
