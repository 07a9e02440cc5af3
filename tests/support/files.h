// Layer 1 of the test support (absl only): temporary directories and
// reading files (logs) for assertion messages.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace virtgate::testing {

// A fresh directory under /tmp (short: unix socket paths are limited to 107
// bytes), removed with everything in it. `mode` 0755 lets other users (a
// virtgated run as another user, libvirtd's children) reach files in it.
class TempDir {
 public:
  explicit TempDir(absl::string_view prefix = "virtgate-test", mode_t mode = 0700);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Empty if it could not be created (see errno).
  const std::string& path() const { return path_; }
  bool ok() const { return !path_.empty(); }

 private:
  std::string path_;
};

// The whole file, or "" if it cannot be read.
std::string ReadFile(const std::string& path);
// Its last `max_bytes` bytes, for error messages.
std::string Tail(const std::string& text, size_t max_bytes = 4000);

}  // namespace virtgate::testing
