#include "tests/support/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "tests/support/wait_for.h"

#ifndef VIRTGATED_PATH
#error "VIRTGATED_PATH must name the virtgated binary under test"
#endif
#ifndef VIRTGATECTL_PATH
#error "VIRTGATECTL_PATH must name the virtgatectl binary under test"
#endif

namespace virtgate::testing {
namespace {

// libvirt's REMOTE_PROGRAM (0x20008086) in the trace's decimal.
constexpr char kRemoteProgram[] = "prog=536903814";

}  // namespace

std::chrono::system_clock::time_point DeadlineIn(absl::Duration timeout) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout);
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(Config config) {
  std::unique_ptr<ServerProcess> v(new ServerProcess());
  v->stop_grace_ = config.stop_grace;
  std::string dir;
  if (config.target.empty()) {
    v->dir_ = std::make_unique<TempDir>(config.temp_dir_prefix);
    if (!v->dir_->ok()) return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
    dir = v->dir_->path();
    // Another user must be able to create its socket and trace there.
    if (config.uid && chown(dir.c_str(), *config.uid, config.gid.value_or(0)) != 0) {
      return absl::InternalError(absl::StrCat("chown ", dir, ": ", strerror(errno)));
    }
    config.target = absl::StrCat("unix:", dir, "/sock");
  }
  v->target_ = config.target;
  const std::string socket_path(absl::StripPrefix(config.target, "unix:"));
  v->log_path_ = config.log_path.empty() ? socket_path + ".log" : config.log_path;
  v->rpc_trace_path_ = v->log_path_ + ".libvirt-rpc.log";
  const int log_fd = open(v->log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("open log: ", strerror(errno)));

  ChildOptions o;
  o.argv = {VIRTGATED_PATH, absl::StrCat("--libvirt_uri=", config.libvirt_uri),
            absl::StrCat("--listen=", v->target_),
            absl::StrCat("--shutdown_grace=", absl::FormatDuration(config.shutdown_grace)),
            // Tests run servers side by side: never the fixed default port.
            "--metrics_listen=127.0.0.1:0"};
  if (config.health_port) {
    v->health_target_ = absl::StrCat("unix:", socket_path, ".health");
    o.argv.push_back(absl::StrCat("--health_listen=", v->health_target_));
  }
  o.argv.insert(o.argv.end(), config.extra_flags.begin(), config.extra_flags.end());
  // Never inherit the test's libvirt logging; trace the RPC client if asked.
  o.extra_env = {"LIBVIRT_DEBUG=", "LIBVIRT_LOG_FILTERS=", "LIBVIRT_LOG_OUTPUTS="};
  if (config.trace_libvirt_rpc) {
    o.extra_env = {"LIBVIRT_LOG_FILTERS=2:rpc.netclient",
                   absl::StrCat("LIBVIRT_LOG_OUTPUTS=2:file:", v->rpc_trace_path_)};
  }
  o.extra_env.insert(o.extra_env.end(), config.extra_env.begin(), config.extra_env.end());
  int stdin_pipe[2] = {-1, -1};
  if (config.stdin_pipe && pipe2(stdin_pipe, O_CLOEXEC) != 0) {
    close(log_fd);
    return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  }
  v->stdin_writer_ = stdin_pipe[1];
  o.stdin_fd = stdin_pipe[0];
  o.log_fd = log_fd;
  o.uid = config.uid;
  o.gid = config.gid;
  o.groups = config.groups;
  absl::StatusOr<pid_t> pid = SpawnChild(o);
  close(log_fd);
  if (stdin_pipe[0] >= 0) close(stdin_pipe[0]);
  if (!pid.ok()) return pid.status();
  v->pid_ = *pid;

  // Up when health answers (SERVING, unless any answer will do). Each try
  // gets a new channel: one whose first connect failed (no socket yet) would
  // wait out gRPC's reconnect backoff.
  std::optional<int> ended;
  std::string last = "never asked";
  const bool answered = WaitFor(
      [&] {
        ended = WaitForExit(v->pid_, absl::Now());
        if (ended.has_value()) return true;
        v->Connect();
        last = v->HealthStatus(absl::Seconds(1));
        return last == "SERVING" || (!config.wait_serving && last == "NOT_SERVING");
      },
      kStartDeadline);
  if (ended.has_value()) {
    v->pid_ = -1;
    return absl::InternalError(absl::StrCat("virtgated ended at start (",
                                            DescribeWaitStatus(*ended), "); log:\n", v->Log()));
  }
  if (!answered) {
    return absl::DeadlineExceededError(absl::StrCat(
        "virtgated not ", config.wait_serving ? "SERVING" : "answering", " within ",
        absl::FormatDuration(kStartDeadline), " (last: ", last, "); log:\n", v->Log()));
  }
  return v;
}

std::string ServerProcess::MetricsAddress() const {
  // "...; Prometheus metrics on http://127.0.0.1:41234/metrics" (the last
  // start's, if the log has several).
  static const std::string kMarker = "Prometheus metrics on http://";
  const std::string log = Log();
  const size_t at = log.rfind(kMarker);
  if (at == std::string::npos) return "";
  const size_t start = at + kMarker.size();
  const size_t end = log.find("/metrics", start);
  return end == std::string::npos ? "" : log.substr(start, end - start);
}

void ServerProcess::Connect() {
  auto channel = grpc::CreateChannel(target_, grpc::InsecureChannelCredentials());
  stub_ = v1::Hypervisor::NewStub(channel);
  health_ = grpc::health::v1::Health::NewStub(
      health_target_.empty()
          ? channel
          : grpc::CreateChannel(health_target_, grpc::InsecureChannelCredentials()));
}

ServerProcess::~ServerProcess() {
  stub_.reset();
  health_.reset();
  if (pid_ > 0) StopChild(pid_, stop_grace_);
  if (stdin_writer_ >= 0) close(stdin_writer_);
}

absl::StatusOr<int> ServerProcess::Terminate(absl::Duration deadline) {
  if (kill(pid_, SIGTERM) != 0) {
    return absl::InternalError(absl::StrCat("kill: ", std::strerror(errno)));
  }
  std::optional<int> status = WaitForExit(pid_, absl::Now() + deadline);
  if (!status.has_value()) {
    return absl::DeadlineExceededError(
        absl::StrCat("virtgated did not exit after SIGTERM; log:\n", Log()));
  }
  pid_ = -1;
  return *status;
}

std::string ServerProcess::HealthStatus(absl::Duration timeout, const std::string& service) {
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(timeout));
  ctx.set_wait_for_ready(false);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = health_->Check(&ctx, req, &resp);
  if (!s.ok()) return absl::StrCat("error ", s.error_code(), ": ", s.error_message());
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
}

size_t ServerProcess::RpcTraceOffset() const {
  struct stat st {};
  return stat(rpc_trace_path_.c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
}

std::map<int, int> ServerProcess::RemoteCallsSince(size_t offset) const {
  std::map<int, int> calls;
  const std::string trace = ReadFile(rpc_trace_path_);
  if (offset > trace.size()) return calls;
  for (absl::string_view line : absl::StrSplit(absl::string_view(trace).substr(offset), '\n')) {
    if (!absl::StrContains(line, "RPC_CLIENT_MSG_TX_QUEUE") ||
        !absl::StrContains(line, kRemoteProgram) || !absl::StrContains(line, " type=0")) {
      continue;
    }
    const size_t at = line.find(" proc=");
    if (at == absl::string_view::npos) continue;
    absl::string_view rest = line.substr(at + 6);
    int proc = 0;
    if (absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &proc)) ++calls[proc];
  }
  return calls;
}

std::string DescribeCalls(const std::map<int, int>& calls) {
  static const std::map<int, std::string> kNames = {
      {15, "DomainGetAutostart"},       {16, "DomainGetInfo"},
      {23, "DomainLookupByName"},       {24, "DomainLookupByUUID"},
      {151, "DomainIsPersistent"},      {212, "DomainGetState"},
      {273, "ConnectListAllDomains"},   {344, "ConnectGetAllDomainStats"}};
  std::string out;
  for (const auto& [proc, n] : calls) {
    auto it = kNames.find(proc);
    absl::StrAppend(&out, out.empty() ? "" : ", ", proc, " ",
                    it == kNames.end() ? "?" : it->second, " x", n);
  }
  return out.empty() ? "(none)" : out;
}

int TotalCalls(const std::map<int, int>& calls) {
  int total = 0;
  for (const auto& [proc, n] : calls) total += n;
  return total;
}

std::string VirtgatedPath() { return VIRTGATED_PATH; }
std::string VirtgatectlPath() { return VIRTGATECTL_PATH; }

CommandResult RunCtl(std::vector<std::string> args, const std::vector<std::string>& env) {
  args.insert(args.begin(), VirtgatectlPath());
  return RunCommand(std::move(args), env);
}

}  // namespace virtgate::testing
