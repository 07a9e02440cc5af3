// Process helpers for the cli tests: running virtgatectl, virsh and other
// programs as children, and virtgated as a child process. Client side only:
// nothing here links the server library (the cli tests must not), so the
// server is always the real virtgated binary.
//
// Readiness and exits are waited for as conditions with deadlines, never
// with fixed sleeps.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace virtgate::cli_test {

// Generous: only a broken build or a hung process comes near them.
inline constexpr absl::Duration kStartDeadline = absl::Seconds(30);
inline constexpr absl::Duration kProcessDeadline = absl::Seconds(30);
// How often a wait re-checks its condition; no outcome depends on it.
inline constexpr absl::Duration kPollInterval = absl::Milliseconds(10);

// testing::SpawnChild with stdout and stderr on the given descriptors and
// `extra_env` ("NAME=value") on top of testing::ChildEnvironment.
absl::StatusOr<pid_t> Spawn(std::vector<std::string> argv, std::vector<std::string> extra_env,
                            int stdout_fd, int stderr_fd);

// Waits for `pid` to exit until `deadline`; nullopt if it is still running.
std::optional<int> WaitForExit(pid_t pid, absl::Time deadline);

std::string DescribeWaitStatus(int status);

// Polls `condition` until it holds or `timeout` passed; its last value.
bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout);

struct CommandResult {
  int exit_code = -1;  // -1: did not exit normally (see error).
  std::string out;
  std::string err;
  std::string error;  // Why the run itself failed, for assertion messages.

  std::vector<std::string> ErrLines() const;
  std::string Describe() const;
};

// Runs a program to completion, capturing stdout and stderr.
CommandResult Run(std::vector<std::string> argv, const std::vector<std::string>& extra_env = {});

// Runs the virtgatectl under test with `args`.
CommandResult RunCtl(std::vector<std::string> args, const std::vector<std::string>& env = {});

// A private directory under /tmp (short: unix socket paths are limited to
// 107 bytes), removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadFileOrEmpty(const std::string& path);

// A virtgated child process.
class ServerProcess {
 public:
  struct Config {
    std::string libvirt_uri = "test:///default";
    // "unix:/path" to listen on. Empty: a socket in a temporary directory
    // of the server's own, removed with it.
    std::string target;
    // Where the server's stdout and stderr go (appended). Empty: next to
    // the socket ("<socket path>.log").
    std::string log_path;
    // More flags, e.g. "--keepalive_interval=1". A later flag overrides an
    // earlier one, so these may override the defaults above.
    std::vector<std::string> extra_flags;
    // Start() waits until health says SERVING (false: only until it answers
    // at all, e.g. NOT_SERVING while libvirt is not up yet).
    bool wait_serving = true;
  };

  // Starts virtgated and waits until its health check says SERVING.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(Config config);
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start() { return Start(Config()); }

  // SIGKILL if still running.
  ~ServerProcess();

  // Sends SIGTERM and returns the wait status once it exited (or
  // DEADLINE_EXCEEDED after `deadline`).
  absl::StatusOr<int> Terminate(absl::Duration deadline = kProcessDeadline);

  const std::string& target() const { return target_; }
  pid_t pid() const { return pid_; }
  std::string Log() const { return ReadFileOrEmpty(log_path_); }

 private:
  ServerProcess() = default;

  // Polls the health service through the client library until it answers
  // SERVING (or anything, with !serving), the process dies, or the deadline
  // passes.
  absl::Status WaitUntilServing(bool serving);

  std::unique_ptr<TempDir> dir_;  // Only when the server chose its socket.
  std::string target_;
  std::string log_path_;
  pid_t pid_ = -1;
};

}  // namespace virtgate::cli_test
