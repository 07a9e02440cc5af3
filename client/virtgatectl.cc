// virtgatectl: command-line client for virtgated, built on the client
// library (include/virtgate/client.h), the command line as args.h parses it
// and the renderings in output.h.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <grpc/support/log.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "grpc/health/v1/health.pb.h"
#include "client/args.h"
#include "client/output.h"
#include "virtgate/client.h"

namespace virtgate {
namespace {

constexpr absl::string_view kProgram = "virtgatectl";
constexpr absl::string_view kDefaultServer = "127.0.0.1:50051";
constexpr absl::string_view kServerEnv = "VIRTGATE_SERVER";

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;  // The call failed, or health is not SERVING.
constexpr int kExitUsage = 2;

std::string Usage() {
  return absl::StrCat(
      "Usage: virtgatectl [OPTIONS] COMMAND [ARGS] [OPTIONS]\n"
      "\n"
      "Command-line client for virtgated, the gRPC server that exposes one\n"
      "hypervisor through libvirt.\n"
      "\n"
      "Commands:\n"
      "  list              List domains (all pages): NAME UUID ID STATE VCPUS MEMORY\n"
      "  get NAME|UUID     Show one domain; a UUID is 32 hex digits, dashes optional\n"
      "  host              Show the host, the hypervisor and virtgated's libvirt\n"
      "                    connections\n"
      "  health [SERVICE]  Print SERVING or NOT_SERVING (grpc.health.v1.Health;\n"
      "                    SERVICE e.g. virtgate.v1.Hypervisor (calls are served)\n"
      "                    or virtgate.v1.Hypervisor/WatchLifecycle (events flow);\n"
      "                    default the server)\n"
      "  watch             Print domain lifecycle events as they happen, one line\n"
      "                    each, until interrupted (SIGINT/SIGTERM: exit 0)\n"
      "  help              Show this text\n"
      "\n"
      "Options (before or after the command; --opt=VALUE or --opt VALUE; '-' and\n"
      "'_' are interchangeable in option names):\n"
      "  --server ADDR        host:port or unix:/path (default: $",
      kServerEnv, ", else\n", "                       ", kDefaultServer,
      ")\n"
      "  --timeout DURATION   Deadline of each call, e.g. 500ms, 3s, 1m (default 10s;\n"
      "                       not applied to watch)\n"
      "  -o, --output FORMAT  table (default) or json\n"
      "  --tls_ca FILE        Use TLS; verify the server with this PEM CA bundle\n"
      "                       (without it, TLS verifies against the system roots)\n"
      "  --tls_cert FILE      Use TLS with this PEM client certificate (mTLS)\n"
      "  --tls_key FILE       Private key for --tls_cert\n"
      "  --tls_server_name NAME  The name the server's certificate must carry, when\n"
      "                       it is not the host of --server (implies TLS)\n"
      "  Each TLS option unset falls back to an environment variable:\n"
      "  $VIRTGATE_TLS_CA, $VIRTGATE_TLS_CLIENT_CERT, $VIRTGATE_TLS_CLIENT_KEY,\n"
      "  $VIRTGATE_TLS_SERVER_NAME\n"
      "  -h, --help           Show this text\n"
      "\n"
      "list filters (combined with AND):\n"
      "  --active | --inactive\n"
      "  --persistent | --transient\n"
      "  --autostart | --no-autostart\n"
      "  --state STATE        Only domains in STATE; repeat it or separate states with\n"
      "                       commas for several. STATE is one of\n"
      "                       ",
      DomainStateNames(),
      "\n"
      "  --page-size N        Domains per call (0: server default); every page is\n"
      "                       fetched either way\n"
      "\n"
      "list and get:\n"
      "  --cached             Answer from virtgated's domain cache: no libvirt call;\n"
      "                       vcpus, memory and CPU time as last read (facts_time in\n"
      "                       JSON says when). Default: read them from libvirt now\n"
      "\n"
      "watch options:\n"
      "  --domain NAME|UUID   Only events of this domain; repeat it for several\n"
      "  --type TYPE          Only events of this type; repeat it or separate types\n"
      "                       with commas for several. TYPE is one of\n"
      "                       ",
      LifecycleEventTypeNames(),
      "\n"
      "  --initial            First print every matching domain's current state\n"
      "                       (INITIAL lines), then a synced marker, then events\n"
      "\n"
      "watch prints one line per message, flushed at once:\n"
      "  TIME  DOMAIN  TYPE/detail  seq=N          an event (\"(synthetic)\" when\n"
      "                                            inferred after a reconnection)\n"
      "  TIME  DOMAIN  INITIAL STATE  seq=N        a current state (--initial)\n"
      "  TIME  -- synced (seq=N) --                end of the current states\n"
      "  TIME  -- libvirt connection LOST: WHY --  virtgated lost libvirt (RESTORED\n"
      "                                            when it is back)\n"
      "TIME is UTC, e.g. 2026-11-26T17:20:01.123Z. When the server restarts or the\n"
      "connection breaks, watch reconnects by itself and resumes without losing or\n"
      "repeating an event; if it cannot resume (the server restarted), it says\n"
      "\"virtgatectl: resynced: WHY\" on stderr and prints the current states\n"
      "again (INITIAL lines, synced), then events. While it cannot reach the\n"
      "server it says why on stderr, once per reason, and keeps trying.\n"
      "\n"
      "Output: text, or with -o json one JSON document with proto field names:\n"
      "list {\"domains\":[...]}, get a Domain, host a HostInfo, health\n"
      "{\"status\":\"SERVING\"}; watch one WatchLifecycleResponse per line.\n"
      "\n"
      "Errors: one line on stderr, \"virtgatectl: MESSAGE\". MESSAGE is the server's\n"
      "error text as sent (for get and health prefixed with the domain or service\n"
      "asked for, e.g. 'domain \"web1\": ', unless the text names it already), or\n"
      "\"cannot reach ADDR: REASON\" when no server answers.\n"
      "\n"
      "Exit status: 0 success (watch: interrupted); 1 the call failed or health is\n"
      "not SERVING (watch: the server refused the watch); 2 usage error.\n"
      "\n"
      "Examples:\n"
      "  virtgatectl list --state running\n"
      "  virtgatectl --server unix:/run/virtgate/virtgate.sock get web1 -o json\n"
      "  virtgatectl health virtgate.v1.Hypervisor\n"
      "  virtgatectl watch --domain web1 --type started,stopped\n");
}

// Error messages may contain newlines (e.g. libvirt text); the one-line
// contract on stderr matters more than their layout.
std::string OneLine(absl::string_view text) {
  return absl::StrReplaceAll(absl::StripTrailingAsciiWhitespace(text), {{"\n", " "}, {"\r", " "}});
}

int Fail(int exit_code, absl::string_view message) {
  std::fprintf(stderr, "%s: %s\n", std::string(kProgram).c_str(), OneLine(message).c_str());
  return exit_code;
}

int UsageError(absl::string_view message) {
  return Fail(kExitUsage, absl::StrCat(message, " (see virtgatectl --help)"));
}

// A plaintext client of a TLS server hears only that the connection closed
// (the server drops the plaintext HTTP/2 preface): say what is likely
// missing. Only when no TLS option was given, from flags or environment.
std::string WithTlsHint(const absl::Status& status, const ClientOptions& options) {
  const bool plaintext = options.tls_ca_file.empty() && options.tls_cert_file.empty() &&
                         options.tls_key_file.empty() && options.tls_server_name.empty();
  if (!plaintext || !IsConnectionError(status) ||
      !absl::EndsWith(status.message(), ": connection closed")) {
    return std::string(status.message());
  }
  return absl::StrCat(status.message(),
                      " (the server may require TLS: give --tls_ca FILE, and --tls_cert and "
                      "--tls_key if it wants a client certificate)");
}

// A failed call. `what` is what was asked for (a domain, a service) and
// `context` how to say so; the context is left out when the server was never
// reached (it would suggest the server answered about it) and when the
// server's message names `what` already.
int CallFailed(const Invocation& inv, const absl::Status& status, absl::string_view what = "",
               absl::string_view context = "") {
  if (IsConnectionError(status)) return Fail(kExitFailure, WithTlsHint(status, inv.client));
  if (context.empty() ||
      absl::StrContains(absl::AsciiStrToLower(status.message()), absl::AsciiStrToLower(what))) {
    return Fail(kExitFailure, status.message());
  }
  return Fail(kExitFailure, absl::StrCat(context, ": ", status.message()));
}

// Writes the result; a full disk or closed pipe must not look like success.
int Print(absl::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    return Fail(kExitFailure, absl::StrCat("writing output: ", std::strerror(errno)));
  }
  return kExitOk;
}

int PrintJson(const google::protobuf::Message& message) {
  absl::StatusOr<std::string> json = FormatJson(message);
  if (!json.ok()) return Fail(kExitFailure, json.status().message());
  return Print(*json);
}

int RunList(const Client& client, const Invocation& inv) {
  v1::ListDomainsRequest request;
  request.set_page_size(inv.page_size);
  request.set_consistency(inv.cached ? v1::READ_CONSISTENCY_CACHED : v1::READ_CONSISTENCY_FRESH);
  if (inv.active.has_value()) request.set_active(*inv.active);
  if (inv.persistent.has_value()) request.set_persistent(*inv.persistent);
  if (inv.autostart.has_value()) request.set_autostart(*inv.autostart);
  for (v1::DomainState state : inv.states) request.add_states(state);

  absl::StatusOr<std::vector<v1::Domain>> domains = client.ListDomains(std::move(request));
  if (!domains.ok()) return CallFailed(inv, domains.status());
  if (inv.output == Output::kJson) {
    absl::StatusOr<std::string> json = FormatDomainListJson(*domains);
    if (!json.ok()) return Fail(kExitFailure, json.status().message());
    return Print(*json);
  }
  return Print(FormatDomainTable(*domains));
}

int RunGet(const Client& client, const Invocation& inv) {
  const std::string& name_or_uuid = inv.argument;
  absl::StatusOr<v1::Domain> domain = client.GetDomain(
      name_or_uuid, inv.cached ? v1::READ_CONSISTENCY_CACHED : v1::READ_CONSISTENCY_FRESH);
  if (!domain.ok()) {
    // The server names a UUID in canonical form, whatever form was given.
    std::string what = name_or_uuid;
    if (IsUuid(what) && what.size() == 32) {
      what = absl::StrCat(what.substr(0, 8), "-", what.substr(8, 4), "-", what.substr(12, 4), "-",
                          what.substr(16, 4), "-", what.substr(20));
    }
    return CallFailed(inv, domain.status(), what, absl::StrCat("domain \"", name_or_uuid, "\""));
  }
  if (inv.output == Output::kJson) return PrintJson(*domain);
  return Print(FormatDomain(*domain));
}

int RunHost(const Client& client, const Invocation& inv) {
  absl::StatusOr<v1::HostInfo> info = client.GetHostInfo();
  if (!info.ok()) return CallFailed(inv, info.status());
  if (inv.output == Output::kJson) return PrintJson(*info);
  return Print(FormatHostInfo(*info));
}

int RunHealth(const Client& client, const Invocation& inv) {
  const std::string& service = inv.argument;
  absl::StatusOr<bool> serving = client.CheckHealth(service);
  if (!serving.ok()) {
    return CallFailed(inv, serving.status(), service,
                      service.empty() ? "" : absl::StrCat("service \"", service, "\""));
  }
  using grpc::health::v1::HealthCheckResponse;
  const HealthCheckResponse::ServingStatus status =
      *serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
  int printed;
  if (inv.output == Output::kJson) {
    HealthCheckResponse response;
    response.set_status(status);
    printed = PrintJson(response);
  } else {
    printed = Print(absl::StrCat(HealthCheckResponse::ServingStatus_Name(status), "\n"));
  }
  if (printed != kExitOk) return printed;
  return *serving ? kExitOk : kExitFailure;
}

// SIGINT and SIGTERM, which end a watch. Blocked in every thread (gRPC's
// threads inherit the mask of the thread that creates them, so this must run
// before the first channel) and taken by one thread with sigwait, which may
// do what a signal handler may not: cancel the watch.
sigset_t StopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

void BlockStopSignals() {
  const sigset_t signals = StopSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

int RunWatch(const Client& client, const Invocation& inv) {
  v1::WatchLifecycleRequest request;
  for (const std::string& domain : inv.domains) {
    if (IsUuid(domain)) {
      request.add_domain_uuids(domain);
    } else {
      request.add_domain_names(domain);
    }
  }
  for (v1::LifecycleEventType type : inv.types) request.add_event_types(type);
  request.set_send_initial_state(inv.initial);

  WatchSession session;
  std::atomic<bool> done{false};
  std::atomic<bool> interrupted{false};
  std::thread signal_waiter([&] {
    const sigset_t signals = StopSignals();
    int signal = 0;
    while (sigwait(&signals, &signal) != 0) {
    }
    if (done.load()) return;  // Woken by RunWatch itself: the watch is over.
    interrupted.store(true);
    session.Cancel();
  });

  std::string write_error;
  // Why the watch is retrying, said once per new reason on stderr (stdout
  // stays events only): a watch that cannot connect must not look like a
  // quiet hypervisor. Forgotten once a message arrives.
  std::string retrying;
  WatchCallbacks callbacks;
  callbacks.on_retry = [&](const absl::Status& why, absl::Duration) {
    std::string reason = OneLine(WithTlsHint(why, inv.client));
    if (reason == retrying) return;
    std::fprintf(stderr, "%s: %s; retrying until interrupted\n", std::string(kProgram).c_str(),
                 reason.c_str());
    std::fflush(stderr);
    retrying = std::move(reason);
  };
  callbacks.on_message = [&](const v1::WatchLifecycleResponse& message) {
    retrying.clear();
    std::string line;
    if (inv.output == Output::kJson) {
      absl::StatusOr<std::string> json = FormatJsonLine(message);
      if (!json.ok()) {
        write_error = std::string(json.status().message());
        session.Cancel();
        return;
      }
      line = *std::move(json);
    } else {
      line = FormatWatchLine(message);
    }
    std::fwrite(line.data(), 1, line.size(), stdout);
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
      write_error = absl::StrCat("writing output: ", std::strerror(errno));
      session.Cancel();
    }
  };
  callbacks.on_resync = [](const std::string& why) {
    std::fprintf(stderr, "%s: resynced: %s\n", std::string(kProgram).c_str(),
                 OneLine(why).c_str());
    std::fflush(stderr);
  };
  const absl::Status status = client.WatchLifecycle(std::move(request), callbacks, &session);

  done.store(true);
  pthread_kill(signal_waiter.native_handle(), SIGTERM);  // Ends its sigwait.
  signal_waiter.join();
  if (!write_error.empty()) return Fail(kExitFailure, write_error);
  if (!status.ok()) return CallFailed(inv, status);
  // OK means cancelled, and only a signal or a failed write cancels.
  return interrupted.load() ? kExitOk : Fail(kExitFailure, "watch ended unexpectedly");
}

// gRPC logs some transport failures (e.g. a TLS handshake) to stderr itself;
// the CLI reports them in its one error line instead.
void SilenceGrpcLogging() {
  // Whoever sets GRPC_VERBOSITY or GRPC_TRACE is debugging and wants them.
  if (std::getenv("GRPC_VERBOSITY") != nullptr || std::getenv("GRPC_TRACE") != nullptr) return;
  gpr_set_log_function([](gpr_log_func_args*) {});
}

// TLS options not given on the command line come from VIRTGATE_TLS_*. The
// client certificate's variables say CLIENT: VIRTGATE_TLS_CERT and _KEY are
// virtgated's own (its server certificate), often in the same environment
// (a container's HEALTHCHECK runs virtgatectl there).
void TlsFromEnvironment(ClientOptions* options) {
  const struct {
    const char* variable;
    std::string* field;
  } kTls[] = {{"VIRTGATE_TLS_CA", &options->tls_ca_file},
              {"VIRTGATE_TLS_CLIENT_CERT", &options->tls_cert_file},
              {"VIRTGATE_TLS_CLIENT_KEY", &options->tls_key_file},
              {"VIRTGATE_TLS_SERVER_NAME", &options->tls_server_name}};
  for (const auto& tls : kTls) {
    const char* value = std::getenv(tls.variable);
    if (tls.field->empty() && value != nullptr) *tls.field = value;
  }
}

int Main(int argc, char** argv) {
  SilenceGrpcLogging();
  absl::StatusOr<Invocation> parsed = ParseArgs(argc, argv);
  if (!parsed.ok()) return UsageError(parsed.status().message());
  const Invocation& inv = *parsed;

  int (*run)(const Client&, const Invocation&) = nullptr;
  switch (inv.command) {
    case Command::kNone:
      std::fputs(Usage().c_str(), stderr);
      return kExitUsage;
    case Command::kHelp:
      std::fputs(Usage().c_str(), stdout);
      return kExitOk;
    case Command::kList:
      run = RunList;
      break;
    case Command::kGet:
      run = RunGet;
      break;
    case Command::kHost:
      run = RunHost;
      break;
    case Command::kHealth:
      run = RunHealth;
      break;
    case Command::kWatch:
      BlockStopSignals();  // Before gRPC starts threads.
      run = RunWatch;
      break;
  }

  std::string server = inv.server;
  if (server.empty()) {
    const char* env_server = std::getenv(std::string(kServerEnv).c_str());
    server = env_server != nullptr && env_server[0] != '\0' ? env_server
                                                             : std::string(kDefaultServer);
  }
  Invocation effective = inv;  // with the TLS options from the environment
  TlsFromEnvironment(&effective.client);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(server, effective.client);
  // Connect only fails for bad options (unreadable TLS files, empty
  // address): a usage error, but --help would not help with it.
  if (!client.ok()) return Fail(kExitUsage, client.status().message());
  return run(**client, effective);
}

}  // namespace
}  // namespace virtgate

int main(int argc, char** argv) { return virtgate::Main(argc, argv); }
