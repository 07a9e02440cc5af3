// virtgatectl's command line, parsed and checked in one step: the command
// and everything its options say, or the one-line reason the line is wrong.
// Internal to the CLI (not part of the public client library API).
//
// Arguments are parsed by hand rather than with absl::flags because the CLI
// needs subcommands, short options (-o, -h), options on either side of the
// command, and one-line usage errors with exit status 2.
//
// Pure: reads no environment and no file, prints nothing, keeps no state, so
// virtgatectl's main and the fuzz target (tests/fuzz) call the same thing.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "virtgate/client.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

enum class Command {
  kNone,  // No command given: virtgatectl prints its usage on stderr, exit 2.
  kHelp,  // help, -h or --help: the usage on stdout, exit 0.
  kList,
  kGet,
  kHost,
  kHealth,
  kWatch,
};

enum class Output { kTable, kJson };

// Everything a valid command line says.
struct Invocation {
  Command command = Command::kNone;
  // get: NAME|UUID, as given; health: SERVICE (empty: the server).
  std::string argument;
  std::string server;  // --server, never empty when given; empty: not given.
  ClientOptions client;  // --timeout and the TLS files.
  Output output = Output::kTable;

  // list only.
  std::optional<bool> active;
  std::optional<bool> persistent;
  std::optional<bool> autostart;
  std::vector<v1::DomainState> states;  // Each once, in the order given.
  int page_size = 0;                    // >= 0

  // list and get.
  bool cached = false;

  // watch only.
  std::vector<std::string> domains;  // Never empty strings.
  std::vector<v1::LifecycleEventType> types;  // Each once, in the order given.
  bool initial = false;
};

// argv[0] is the program and is skipped. INVALID_ARGUMENT, with the message
// virtgatectl prints (without its "(see virtgatectl --help)"), when an
// option is unknown, lacks or has a stray value, has a bad value or does
// not apply to the command, or when the command is unknown or has too few
// or too many arguments. Help wins over the command's checks, not over a
// bad option.
absl::StatusOr<Invocation> ParseArgs(int argc, const char* const* argv);

}  // namespace virtgate
