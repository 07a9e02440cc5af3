#include "cli_test_support.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "tests/support/child_process.h"
#include "virtgate/client.h"

namespace virtgate::cli_test {

absl::StatusOr<pid_t> Spawn(std::vector<std::string> argv, std::vector<std::string> extra_env,
                            int stdout_fd, int stderr_fd) {
  testing::ChildOptions o;
  o.argv = std::move(argv);
  o.extra_env = std::move(extra_env);
  o.log_fd = stdout_fd;
  o.stderr_fd = stderr_fd;
  return testing::SpawnChild(o);
}

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

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= deadline) return condition();
    absl::SleepFor(kPollInterval);
  }
  return true;
}

std::vector<std::string> CommandResult::ErrLines() const {
  return absl::StrSplit(absl::StripSuffix(err, "\n"), '\n', absl::SkipEmpty());
}

std::string CommandResult::Describe() const {
  return absl::StrCat("exit ", exit_code, error, "\n--- stdout:\n", out, "--- stderr:\n", err);
}

// Both pipes are drained together so a chatty child can never block on a
// full pipe.
CommandResult Run(std::vector<std::string> argv, const std::vector<std::string>& extra_env) {
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
      Spawn(std::move(argv), extra_env, out_pipe[1], err_pipe[1]);
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

CommandResult RunCtl(std::vector<std::string> args, const std::vector<std::string>& env) {
  args.insert(args.begin(), VIRTGATECTL_PATH);
  return Run(std::move(args), env);
}

TempDir::TempDir() {
  std::string pattern = "/tmp/virtgatectl_test.XXXXXX";
  if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(Config config) {
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  if (config.target.empty()) {
    server->dir_ = std::make_unique<TempDir>();
    if (server->dir_->path().empty()) {
      return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
    }
    config.target = absl::StrCat("unix:", server->dir_->path(), "/sock");
  }
  server->target_ = config.target;
  server->log_path_ = config.log_path.empty()
                          ? absl::StrCat(absl::StripPrefix(config.target, "unix:"), ".log")
                          : config.log_path;
  const int log_fd =
      open(server->log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("open log: ", std::strerror(errno)));
  std::vector<std::string> argv = {VIRTGATED_PATH,
                                   absl::StrCat("--libvirt_uri=", config.libvirt_uri),
                                   absl::StrCat("--listen=", server->target_),
                                   "--shutdown_grace=5s"};
  argv.insert(argv.end(), config.extra_flags.begin(), config.extra_flags.end());
  absl::StatusOr<pid_t> pid = Spawn(std::move(argv), {}, log_fd, log_fd);
  close(log_fd);
  if (!pid.ok()) return pid.status();
  server->pid_ = *pid;
  absl::Status serving = server->WaitUntilServing(config.wait_serving);
  if (!serving.ok()) return serving;
  return server;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    WaitForExit(pid_, absl::InfiniteFuture());
  }
}

absl::StatusOr<int> ServerProcess::Terminate(absl::Duration deadline) {
  if (kill(pid_, SIGTERM) != 0) {
    return absl::InternalError(absl::StrCat("kill: ", std::strerror(errno)));
  }
  // The server's grace period is 5s; it must be done well within this.
  std::optional<int> status = WaitForExit(pid_, absl::Now() + deadline);
  if (!status.has_value()) {
    return absl::DeadlineExceededError(
        absl::StrCat("virtgated did not exit after SIGTERM; log:\n", Log()));
  }
  pid_ = -1;
  return *status;
}

// Each attempt uses a new Client: a channel whose first connect failed
// (socket not there yet) waits out gRPC's reconnect backoff before trying
// again.
absl::Status ServerProcess::WaitUntilServing(bool want_serving) {
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
    if (serving.ok() && (*serving || !want_serving)) return absl::OkStatus();
    last = serving.ok() ? absl::UnavailableError("NOT_SERVING") : serving.status();
    absl::SleepFor(kPollInterval);
  }
  return absl::DeadlineExceededError(
      absl::StrCat("virtgated not SERVING within ", absl::FormatDuration(kStartDeadline),
                   " (last: ", last.ToString(), "); log:\n", Log()));
}

}  // namespace virtgate::cli_test
