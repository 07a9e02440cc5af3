// Child processes for the end-to-end tests: daemons (virtlogd, libvirtd) and
// virtgated, started with the tests' shared SpawnChild and stopped by pid.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/support/child_process.h"

namespace virtgate::e2e {

// Started by the tests' shared spawner (tests/support/child_process.h).
using testing::ChildOptions;
using testing::SpawnChild;

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
