#include "tests/e2e/virtgated_process.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

#ifndef VIRTGATED_PATH
#error "VIRTGATED_PATH must name the virtgated binary under test"
#endif

namespace virtgate::e2e {
namespace {

// libvirt's REMOTE_PROGRAM (0x20008086) in the trace's decimal.
constexpr char kRemoteProgram[] = "prog=536903814";

}  // namespace

std::chrono::system_clock::time_point DeadlineIn(absl::Duration timeout) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout);
}

absl::StatusOr<std::unique_ptr<Virtgated>> Virtgated::Start(Config config) {
  std::unique_ptr<Virtgated> v(new Virtgated());
  v->dir_ = std::make_unique<TempDir>("vgte2e-vgd");
  if (!v->dir_->ok()) return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
  const std::string& dir = v->dir_->path();
  // Another user must be able to create its socket and trace there.
  if (config.uid && chown(dir.c_str(), *config.uid, config.gid.value_or(0)) != 0) {
    return absl::InternalError(absl::StrCat("chown ", dir, ": ", strerror(errno)));
  }
  v->target_ = absl::StrCat("unix:", dir, "/sock");
  v->log_path_ = dir + "/virtgated.log";
  v->rpc_trace_path_ = dir + "/libvirt-rpc.log";
  const int log_fd = open(v->log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("open log: ", strerror(errno)));

  ChildOptions o;
  o.argv = {VIRTGATED_PATH, absl::StrCat("--libvirt_uri=", config.libvirt_uri),
            absl::StrCat("--listen=", v->target_), "--shutdown_grace=2s"};
  o.argv.insert(o.argv.end(), config.extra_flags.begin(), config.extra_flags.end());
  // Never inherit the test's libvirt logging; trace the RPC client if asked.
  o.extra_env = {"LIBVIRT_DEBUG=", "LIBVIRT_LOG_FILTERS=", "LIBVIRT_LOG_OUTPUTS="};
  if (config.trace_libvirt_rpc) {
    o.extra_env = {"LIBVIRT_LOG_FILTERS=2:rpc.netclient",
                   absl::StrCat("LIBVIRT_LOG_OUTPUTS=2:file:", v->rpc_trace_path_)};
  }
  o.log_fd = log_fd;
  o.uid = config.uid;
  o.gid = config.gid;
  o.groups = config.groups;
  absl::StatusOr<pid_t> pid = SpawnChild(o);
  close(log_fd);
  if (!pid.ok()) return pid.status();
  v->pid_ = *pid;

  // Up when health answers (SERVING, unless any answer will do). Each try
  // gets a new channel: one whose first connect failed (no socket yet) would
  // wait out gRPC's reconnect backoff.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::string last;
  while (absl::Now() < deadline) {
    if (std::optional<int> status = WaitForChildExit(v->pid_, absl::Now())) {
      v->pid_ = -1;
      return absl::InternalError(absl::StrCat("virtgated ended at start (",
                                              DescribeWaitStatus(*status), "); log:\n", v->Log()));
    }
    auto channel = grpc::CreateChannel(v->target_, grpc::InsecureChannelCredentials());
    v->stub_ = v1::Hypervisor::NewStub(channel);
    v->health_ = grpc::health::v1::Health::NewStub(channel);
    last = v->HealthStatus(absl::Milliseconds(500));
    if (last == "SERVING" || (!config.wait_serving && last == "NOT_SERVING")) return v;
    absl::SleepFor(absl::Milliseconds(20));  // poll interval
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "virtgated not ", config.wait_serving ? "SERVING" : "answering", " within 30s (last: ",
      last, "); log:\n", v->Log()));
}

Virtgated::~Virtgated() {
  stub_.reset();
  health_.reset();
  if (pid_ > 0) StopChild(pid_, absl::Seconds(10));
}

std::string Virtgated::HealthStatus(absl::Duration timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(timeout));
  ctx.set_wait_for_ready(false);
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = health_->Check(&ctx, req, &resp);
  if (!s.ok()) return absl::StrCat("error ", s.error_code(), ": ", s.error_message());
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
}

size_t Virtgated::RpcTraceOffset() const {
  struct stat st {};
  return stat(rpc_trace_path_.c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
}

std::map<int, int> Virtgated::RemoteCallsSince(size_t offset) const {
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

}  // namespace virtgate::e2e
