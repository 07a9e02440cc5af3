#include "tests/e2e/child_process.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

extern char** environ;

namespace virtgate::e2e {
namespace {

std::vector<char*> CStrings(std::vector<std::string>* strings) {
  std::vector<char*> out;
  for (std::string& s : *strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

std::string VariableName(const std::string& entry) { return entry.substr(0, entry.find('=')); }

}  // namespace

absl::StatusOr<pid_t> SpawnChild(const ChildOptions& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("SpawnChild: empty argv");
  std::vector<std::string> argv = options.argv;
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name = VariableName(entry);
    // gRPC's own logging and tracing would change what the children print.
    if (name == "GRPC_VERBOSITY" || name == "GRPC_TRACE") continue;
    bool overridden = false;
    for (const std::string& x : options.extra_env) overridden |= VariableName(x) == name;
    if (!overridden) env.push_back(entry);
  }
  env.insert(env.end(), options.extra_env.begin(), options.extra_env.end());
  std::vector<char*> c_argv = CStrings(&argv);
  std::vector<char*> c_env = CStrings(&env);
  const int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd < 0) return absl::InternalError(absl::StrCat("open /dev/null: ", strerror(errno)));
  const int out_fd = options.log_fd >= 0 ? options.log_fd : null_fd;
  const int death_signal = options.death_signal != 0 ? options.death_signal : SIGKILL;
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
    if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
        dup2(out_fd, STDERR_FILENO) < 0) {
      _exit(127);
    }
    // No descriptor of the test (gRPC sockets, ctest's pipes) leaks into a
    // daemon that might outlive it.
    syscall(SYS_close_range, 3u, ~0u, 0u);
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

std::optional<int> WaitForChildExit(pid_t pid, absl::Time deadline) {
  absl::Duration backoff = absl::Milliseconds(1);
  while (true) {
    int status = 0;
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) return status;
    if (done < 0 && errno != EINTR) return std::nullopt;
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(backoff);  // poll interval while waiting for the exit
    backoff = std::min(backoff * 2, absl::Milliseconds(20));
  }
}

int StopChild(pid_t pid, absl::Duration grace) {
  kill(pid, SIGCONT);
  kill(pid, SIGTERM);
  std::optional<int> status = WaitForChildExit(pid, absl::Now() + grace);
  if (status) return *status;
  kill(pid, SIGKILL);
  status = WaitForChildExit(pid, absl::InfiniteFuture());
  return status.value_or(-1);
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  return absl::StrCat("wait status ", status);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

std::string Tail(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  return absl::StrCat("...", text.substr(text.size() - max_bytes));
}

TempDir::TempDir(const std::string& prefix) {
  std::string pattern = absl::StrCat("/tmp/", prefix, ".XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) return;
  chmod(pattern.c_str(), 0755);
  path_ = pattern;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace virtgate::e2e
