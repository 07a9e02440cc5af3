// Child processes for the end-to-end tests: daemons (virtlogd, libvirtd) and
// virtgated, started with fork + exec and stopped by pid.
//
// Everything the child touches between fork and exec is prepared before the
// fork (the test has gRPC and libvirt threads). The child dies with the
// thread that forked it (PR_SET_PDEATHSIG), starts with no signals blocked,
// stdin from /dev/null, stdout and stderr on `log_fd`, and no other
// inherited descriptors.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace virtgate::e2e {

struct ChildOptions {
  std::vector<std::string> argv;  // argv[0] is the program's path
  // Extra "NAME=value" entries on top of the test's environment.
  std::vector<std::string> extra_env;
  int log_fd = -1;  // stdout and stderr; -1: /dev/null
  int death_signal = 0;  // 0: SIGKILL
  // Run as this user (and group, and supplementary groups) instead of ours;
  // needs root.
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::vector<gid_t> groups;
};

absl::StatusOr<pid_t> SpawnChild(const ChildOptions& options);

// Waits until `pid` (our child) exits; its wait status, or nullopt if it is
// still running at `deadline`.
std::optional<int> WaitForChildExit(pid_t pid, absl::Time deadline);

// SIGTERM (after SIGCONT, in case it is stopped); SIGKILL if it has not
// exited after `grace`. Reaps it. Returns its wait status.
int StopChild(pid_t pid, absl::Duration grace);

std::string DescribeWaitStatus(int status);

// The whole file, or "" if it cannot be read.
std::string ReadFile(const std::string& path);
// Its last `max_bytes` bytes, for error messages.
std::string Tail(const std::string& text, size_t max_bytes = 4000);

// A fresh directory under /tmp (short: unix socket paths are limited),
// removed with its contents. Mode 0755, so other users may reach files in it.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "vgte2e");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  bool ok() const { return !path_.empty(); }

 private:
  std::string path_;
};

}  // namespace virtgate::e2e
