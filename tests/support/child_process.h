// Layer 1 of the test support (absl only): starting a child process from a
// test, waiting for it and stopping it. Every test that runs a program
// (virtgated, virtgatectl, virsh, libvirtd, virtlogd) starts it here.
//
// Everything the child touches between fork and exec is prepared before the
// fork: test binaries have many threads (gRPC, libvirt), and a child forked
// while another thread holds a lock (the allocator's, the environment's)
// deadlocks if it takes it. The child dies with the thread that forked it
// (PR_SET_PDEATHSIG), starts with no signals blocked, stdin from /dev/null
// (or the caller's descriptor), and inherits no other descriptor of the test.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace virtgate::testing {

// Generous: only a broken build or a hung process comes near them.
inline constexpr absl::Duration kStartDeadline = absl::Seconds(30);
inline constexpr absl::Duration kProcessDeadline = absl::Seconds(30);

// The test's environment, minus what would change a child's behaviour
// behind the test's back (a default server for virtgatectl, gRPC's own
// logging and tracing), plus `extra` ("NAME=value", replacing ours).
std::vector<std::string> ChildEnvironment(const std::vector<std::string>& extra);

struct ChildOptions {
  std::vector<std::string> argv;  // argv[0] is the program's path
  // Extra "NAME=value" entries on top of ChildEnvironment.
  std::vector<std::string> extra_env;
  int stdin_fd = -1;   // -1: /dev/null
  int log_fd = -1;     // stdout and stderr; -1: /dev/null
  int stderr_fd = -1;  // stderr, if not log_fd
  int death_signal = 0;  // 0: SIGKILL
  // Run as this user (and group, and supplementary groups) instead of ours;
  // needs root.
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::vector<gid_t> groups;
};

absl::StatusOr<pid_t> SpawnChild(const ChildOptions& options);

// Waits until `pid` (our child) exits; its wait status, or nullopt if it is
// still running at `deadline` (absl::Now(): only look).
std::optional<int> WaitForExit(pid_t pid, absl::Time deadline);

// SIGTERM (after SIGCONT, in case it is stopped); SIGKILL if it has not
// exited after `grace` (zero: SIGKILL at once). Reaps it. Returns its wait
// status.
int StopChild(pid_t pid, absl::Duration grace);

// "exit 3", "killed by signal 9".
std::string DescribeWaitStatus(int status);

}  // namespace virtgate::testing
