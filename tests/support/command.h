// Layer 1 of the test support (absl only): a child whose stdout and stderr
// the test reads, as they come (CapturedChild) or once it has ended
// (RunCommand, e.g. virtgatectl or virsh).
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/support/child_process.h"

namespace virtgate::testing {

// A child process with its stdout and stderr on pipes of ours. Both are
// drained together, so a chatty child never blocks on a full pipe. Used from
// one thread.
class CapturedChild {
 public:
  // Starts options.argv; its log_fd and stderr_fd are replaced by the pipes.
  static absl::StatusOr<std::unique_ptr<CapturedChild>> Start(ChildOptions options);
  ~CapturedChild();  // SIGKILL if still running; closes the pipes

  CapturedChild(const CapturedChild&) = delete;
  CapturedChild& operator=(const CapturedChild&) = delete;

  // Waits for output until `deadline` and appends it to out() or err();
  // false on timeout or once both pipes are closed.
  bool ReadSome(absl::Time deadline);
  // Reads until both pipes are closed (the child and anything it started
  // have exited) or `deadline`.
  void ReadToEnd(absl::Time deadline);
  bool stdout_open() const { return out_fd_ >= 0; }

  // What it printed so far; the caller may consume out() from the front.
  std::string& out() { return out_; }
  const std::string& err() const { return err_; }

  // Whether it still runs (reaps it if not).
  bool Running();
  // Waits until it exits, until `deadline`; its wait status, or nullopt if
  // it still runs.
  std::optional<int> WaitForExit(absl::Time deadline);
  // Sends `signal` (if it still runs), then WaitForExit(deadline).
  std::optional<int> Stop(int signal, absl::Time deadline);
  // The wait status once it has been reaped.
  const std::optional<int>& exit_status() const { return exit_status_; }

 private:
  CapturedChild() = default;

  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  int out_fd_ = -1;
  int err_fd_ = -1;
  std::string out_;
  std::string err_;
};

struct CommandResult {
  int exit_code = -1;  // -1: did not exit normally (see error).
  std::string out;
  std::string err;
  std::string error;  // Why the run itself failed, for assertion messages.

  std::vector<std::string> ErrLines() const;
  std::string Describe() const;
};

// Runs argv (argv[0] a path) to completion with `extra_env` ("NAME=value")
// on top of ChildEnvironment; kills it if it has not ended after
// kProcessDeadline.
CommandResult RunCommand(std::vector<std::string> argv,
                         const std::vector<std::string>& extra_env = {});

}  // namespace virtgate::testing
