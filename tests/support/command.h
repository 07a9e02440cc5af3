// Layer 1 of the test support (absl only): running a program to completion
// with its stdout and stderr captured, e.g. virtgatectl or virsh.
#pragma once

#include <string>
#include <vector>

namespace virtgate::testing {

struct CommandResult {
  int exit_code = -1;  // -1: did not exit normally (see error).
  std::string out;
  std::string err;
  std::string error;  // Why the run itself failed, for assertion messages.

  std::vector<std::string> ErrLines() const;
  std::string Describe() const;
};

// Runs argv (argv[0] a path) with `extra_env` ("NAME=value") on top of
// ChildEnvironment; kills it if it has not exited after kProcessDeadline.
CommandResult RunCommand(std::vector<std::string> argv,
                         const std::vector<std::string>& extra_env = {});

}  // namespace virtgate::testing
