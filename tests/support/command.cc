#include "tests/support/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "tests/support/child_process.h"

namespace virtgate::testing {

std::vector<std::string> CommandResult::ErrLines() const {
  return absl::StrSplit(absl::StripSuffix(err, "\n"), '\n', absl::SkipEmpty());
}

std::string CommandResult::Describe() const {
  return absl::StrCat("exit ", exit_code, error, "\n--- stdout:\n", out, "--- stderr:\n", err);
}

// Both pipes are drained together so a chatty child can never block on a
// full pipe.
CommandResult RunCommand(std::vector<std::string> argv,
                         const std::vector<std::string>& extra_env) {
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
  ChildOptions options;
  options.argv = std::move(argv);
  options.extra_env = extra_env;
  options.log_fd = out_pipe[1];
  options.stderr_fd = err_pipe[1];
  absl::StatusOr<pid_t> pid = SpawnChild(options);
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

}  // namespace virtgate::testing
