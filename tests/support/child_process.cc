#include "tests/support/child_process.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"

extern char** environ;

namespace virtgate::testing {
namespace {

// execve's view of `strings`, which must outlive it.
std::vector<char*> CStrings(std::vector<std::string>* strings) {
  std::vector<char*> out;
  for (std::string& s : *strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

absl::string_view VariableName(absl::string_view entry) {
  return entry.substr(0, entry.find('='));
}

}  // namespace

std::vector<std::string> ChildEnvironment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view entry = *e;
    const absl::string_view name = VariableName(entry);
    if (name == "VIRTGATE_SERVER" || name == "GRPC_VERBOSITY" || name == "GRPC_TRACE") continue;
    bool overridden = false;
    for (const std::string& x : extra) overridden = overridden || VariableName(x) == name;
    if (!overridden) env.emplace_back(entry);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

absl::StatusOr<pid_t> SpawnChild(const ChildOptions& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("SpawnChild: empty argv");
  std::vector<std::string> argv = options.argv;
  std::vector<std::string> env = ChildEnvironment(options.extra_env);
  std::vector<char*> c_argv = CStrings(&argv);
  std::vector<char*> c_env = CStrings(&env);
  const int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd < 0) return absl::InternalError(absl::StrCat("open /dev/null: ", strerror(errno)));
  const int in_fd = options.stdin_fd >= 0 ? options.stdin_fd : null_fd;
  const int out_fd = options.log_fd >= 0 ? options.log_fd : null_fd;
  const int err_fd = options.stderr_fd >= 0 ? options.stderr_fd : out_fd;
  const int death_signal = options.death_signal != 0 ? options.death_signal : SIGKILL;
  const long max_fd = sysconf(_SC_OPEN_MAX);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(null_fd);
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, death_signal);
    if (getppid() != parent) _exit(127);  // the parent died before prctl
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (dup2(in_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
        dup2(err_fd, STDERR_FILENO) < 0) {
      _exit(127);
    }
    // No descriptor of the test (gRPC sockets, libvirt connections, ctest's
    // pipes) leaks into a child that might outlive it.
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0) {
      for (long fd = 3; fd < max_fd; ++fd) close(static_cast<int>(fd));  // kernels before 5.9
    }
    if (options.gid && (setgroups(options.groups.size(), options.groups.data()) != 0 ||
                        setgid(*options.gid) != 0)) {
      _exit(126);
    }
    if (options.uid && setuid(*options.uid) != 0) _exit(126);
    execve(c_argv[0], c_argv.data(), c_env.data());
    static constexpr char kExecFailed[] = "exec failed\n";
    (void)!write(STDERR_FILENO, kExecFailed, sizeof(kExecFailed) - 1);
    _exit(127);
  }
  close(null_fd);
  return pid;
}

std::optional<int> WaitForExit(pid_t pid, absl::Time deadline) {
  absl::Duration backoff = absl::Milliseconds(1);
  while (true) {
    int status = 0;
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) return status;
    if (done < 0 && errno != EINTR) return std::nullopt;
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(backoff);  // poll interval while waiting for the exit
    backoff = std::min(backoff * 2, absl::Milliseconds(10));
  }
}

int StopChild(pid_t pid, absl::Duration grace) {
  if (grace > absl::ZeroDuration()) {
    kill(pid, SIGCONT);
    kill(pid, SIGTERM);
    if (std::optional<int> status = WaitForExit(pid, absl::Now() + grace)) return *status;
  }
  kill(pid, SIGKILL);
  return WaitForExit(pid, absl::InfiniteFuture()).value_or(-1);
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  return absl::StrCat("wait status ", status);
}

}  // namespace virtgate::testing
