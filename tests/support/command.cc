#include "tests/support/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace virtgate::testing {

absl::StatusOr<std::unique_ptr<CapturedChild>> CapturedChild::Start(ChildOptions options) {
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    const int error = errno;
    close(out_pipe[0]);
    close(out_pipe[1]);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(error)));
  }
  std::unique_ptr<CapturedChild> child(new CapturedChild());
  child->out_fd_ = out_pipe[0];
  child->err_fd_ = err_pipe[0];
  options.log_fd = out_pipe[1];
  options.stderr_fd = err_pipe[1];
  absl::StatusOr<pid_t> pid = SpawnChild(options);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (!pid.ok()) return pid.status();
  child->pid_ = *pid;
  return child;
}

CapturedChild::~CapturedChild() {
  if (pid_ > 0) StopChild(pid_, absl::ZeroDuration());
  if (out_fd_ >= 0) close(out_fd_);
  if (err_fd_ >= 0) close(err_fd_);
}

bool CapturedChild::ReadSome(absl::Time deadline) {
  pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
  const int64_t ms = std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now()));
  const int ready = poll(fds, 2, static_cast<int>(std::min<int64_t>(ms, 1 << 30)));
  if (ready < 0 && errno == EINTR) return true;
  if (ready <= 0) return false;
  int* fd_of[2] = {&out_fd_, &err_fd_};
  std::string* sink[2] = {&out_, &err_};
  for (int i = 0; i < 2; ++i) {
    if (fds[i].fd < 0 || fds[i].revents == 0) continue;
    char buffer[4096];
    const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
    if (n > 0) {
      sink[i]->append(buffer, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      close(*fd_of[i]);  // EOF (or error): stop polling it.
      *fd_of[i] = -1;
    }
  }
  return out_fd_ >= 0 || err_fd_ >= 0;
}

void CapturedChild::ReadToEnd(absl::Time deadline) {
  while ((out_fd_ >= 0 || err_fd_ >= 0) && ReadSome(deadline)) {
  }
}

bool CapturedChild::Running() {
  if (pid_ <= 0) return false;
  return !WaitForExit(absl::Now()).has_value();
}

std::optional<int> CapturedChild::WaitForExit(absl::Time deadline) {
  if (pid_ <= 0) return exit_status_;
  std::optional<int> status = testing::WaitForExit(pid_, deadline);
  if (status.has_value()) {
    pid_ = -1;
    exit_status_ = status;
  }
  return status;
}

std::optional<int> CapturedChild::Stop(int signal, absl::Time deadline) {
  if (pid_ > 0) kill(pid_, signal);
  return WaitForExit(deadline);
}

std::vector<std::string> CommandResult::ErrLines() const {
  return absl::StrSplit(absl::StripSuffix(err, "\n"), '\n', absl::SkipEmpty());
}

std::string CommandResult::Describe() const {
  return absl::StrCat("exit ", exit_code, error, "\n--- stdout:\n", out, "--- stderr:\n", err);
}

CommandResult RunCommand(std::vector<std::string> argv,
                         const std::vector<std::string>& extra_env) {
  CommandResult result;
  ChildOptions options;
  options.argv = std::move(argv);
  options.extra_env = extra_env;
  absl::StatusOr<std::unique_ptr<CapturedChild>> child = CapturedChild::Start(options);
  if (!child.ok()) {
    result.error = absl::StrCat(" (", child.status().message(), ")");
    return result;
  }
  const absl::Time deadline = absl::Now() + kProcessDeadline;
  (*child)->ReadToEnd(deadline);
  std::optional<int> status = (*child)->WaitForExit(deadline);
  if (!status.has_value()) {
    status = (*child)->Stop(SIGKILL, absl::InfiniteFuture());
    result.error = " (timed out and killed)";
  }
  if (status.has_value() && WIFEXITED(*status)) {
    result.exit_code = WEXITSTATUS(*status);
  } else if (status.has_value()) {
    absl::StrAppend(&result.error, " (", DescribeWaitStatus(*status), ")");
  }
  result.out = std::move((*child)->out());
  result.err = (*child)->err();
  return result;
}

}  // namespace virtgate::testing
