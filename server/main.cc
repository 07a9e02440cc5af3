// virtgated: parses the flags (server_flags.h), runs the server, and shuts it
// down gracefully on SIGTERM/SIGINT (exit 0).
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/base/bounded_run.h"
#include "server/base/log.h"
#include "server/base/memory_trimmer.h"
#include "server/base/service_manager.h"
#include "server/server.h"
#include "server/server_flags.h"

namespace {

// Before any thread: at most 2 malloc arenas unless MALLOC_ARENA_MAX says
// otherwise. glibc gives each busy thread an arena (up to 8 per core) and
// keeps what is freed there; a worker or gRPC thread that built a
// 10,000-domain listing keeps an arena that size. With 10,000 domains, 10
// FRESH listings took RSS from 44 to 160 MiB by default, to 77 MiB with 2
// arenas (1: 69; jemalloc 130, tcmalloc 117, both from Debian, preloaded;
// the heap itself peaked at 37 MiB).
void ConfigureMalloc() {
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
}

// --log_level and --log_format; false (having said why) if either is bad.
bool ConfigureLogging() {
  virtgate::LogLevel level;
  if (!virtgate::ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    std::fprintf(stderr, "virtgated: --log_level must be debug, info, warning or error\n");
    return false;
  }
  virtgate::SetMinLogLevel(level);
  virtgate::LogFormat format;
  if (!virtgate::ParseLogFormat(absl::GetFlag(FLAGS_log_format), &format)) {
    std::fprintf(stderr, "virtgated: --log_format must be text or json\n");
    return false;
  }
  virtgate::SetLogFormat(format);
  return true;
}

// Blocks the shutdown signals in every thread (they inherit this mask), to
// take them synchronously in main with sigwait; ignores SIGPIPE.
sigset_t ShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A client vanishing mid-write must not kill the daemon.
  signal(SIGPIPE, SIG_IGN);
  return signals;
}

}  // namespace

int main(int argc, char** argv) {
  ConfigureMalloc();  // before any thread
  // Our own help, by topic, on stdout with exit 0 (absl's lists flags by
  // source file and exits 1). Before the environment is read, so it shows
  // the defaults.
  if (virtgate::WantsHelp(argc, argv)) {
    std::fputs(virtgate::FlagsHelp().c_str(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  }
  absl::SetProgramUsageMessage("virtgated: gRPC access to one hypervisor through libvirt "
                               "(virtgated --help lists the flags)");
  absl::FlagsUsageConfig usage;
  usage.version_string = [] { return std::string("virtgated " VIRTGATE_VERSION "\n"); };
  absl::SetFlagsUsageConfig(usage);
  if (absl::Status env = virtgate::FlagsFromEnvironment(); !env.ok()) {
    std::fprintf(stderr, "virtgated: %s\n", std::string(env.message()).c_str());
    return 2;
  }
  absl::ParseCommandLine(argc, argv);
  // absl::Mutex's deadlock detector (on in Debian's build of abseil) records
  // every lock order in a global graph: it took 3% of the CPU of delivering
  // an event to 1,000 watchers. The tests keep it on; -Wthread-safety checks
  // lock order at compile time.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  if (!ConfigureLogging()) return 2;
  const sigset_t signals = ShutdownSignals();
  absl::StatusOr<virtgate::Server::Options> options = virtgate::OptionsFromFlags();
  if (!options.ok()) {
    std::fprintf(stderr, "virtgated: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<std::unique_ptr<virtgate::Server>> server =
      virtgate::Server::BuildAndStart(*std::move(options));
  if (!server.ok()) {
    std::fprintf(stderr, "virtgated: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  // Memory freed after a storm goes back to the system (see MemoryTrimmer).
  auto trimmer = std::make_unique<virtgate::MemoryTrimmer>(virtgate::MemoryTrimmer::Options{});
  // Under systemd (Type=notify): started once the listener answers.
  virtgate::ServiceManager::Ready(absl::StrCat("serving on ", (*server)->address()));

  int sig = 0;
  sigwait(&signals, &sig);
  virtgate::ServiceManager::Stopping();
  const absl::Duration grace = absl::GetFlag(FLAGS_shutdown_grace);
  virtgate::LogInfo("received ", sig == SIGTERM ? "SIGTERM" : "SIGINT", "; shutting down (grace ",
                    absl::FormatDuration(grace), ")");
  (*server)->Shutdown(grace);
  trimmer.reset();
  if (virtgate::AnyThreadAbandoned()) {
    // A thread is still inside libvirt: no destructors, no exit handlers
    // (OPENSSL_cleanup would free what it is using).
    std::fflush(nullptr);
    _exit(0);
  }
  server->reset();
  return 0;
}
