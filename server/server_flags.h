// virtgated's command-line flags (one topic per group below) and their
// translation into Server::Options, checked once here.
#pragma once

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/server.h"

// Read by main itself, not part of Options.
ABSL_DECLARE_FLAG(std::string, log_level);
ABSL_DECLARE_FLAG(std::string, log_format);
ABSL_DECLARE_FLAG(absl::Duration, shutdown_grace);

namespace virtgate {

// Whether the command line asks for help: -h, --help and absl's other help
// flags (--helpfull, --helpshort, ...), before any "--".
bool WantsHelp(int argc, char** argv);

// virtgated --help: usage, the environment variables, then every flag with
// its default and help, grouped by topic (libvirt, listening and TLS,
// limits, events, shutdown, logging).
std::string FlagsHelp();

// Sets each flag of virtgated from the environment variable VIRTGATE_<FLAG
// IN CAPITALS> (VIRTGATE_LIBVIRT_URI, VIRTGATE_TLS_CERT, ...) when it is set.
// Call it before parsing the command line, which then overrides it. An
// error names the variable and what its value must be.
absl::Status FlagsFromEnvironment();

// The parsed flags as Options; an error names the flag and what it must be.
absl::StatusOr<Server::Options> OptionsFromFlags();

}  // namespace virtgate
