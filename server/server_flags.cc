#include "server/server_flags.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "server/libvirt/connection_pool.h"

ABSL_FLAG(std::string, libvirt_uri, "qemu:///system",
          "libvirt URI to serve, e.g. qemu:///system, test:///default, "
          "qemu+unix:///system?socket=/run/libvirt/libvirt-sock-ro");
ABSL_FLAG(std::string, libvirt_auth_file, "",
          "libvirt's own auth.conf giving the credentials libvirt asks for (e.g. a SASL login): "
          "[credentials-NAME] with authname= and password=, and [auth-libvirt-HOST] "
          "credentials=NAME (HOST is localhost for a local socket; or auth-libvirt-default). "
          "libvirt reads it; virtgated only checks it: an absolute path to a regular file "
          "owned by virtgated's user with no group or other permission bits (e.g. 0600), or "
          "virtgated refuses to start. "
          "virtgated never prompts: a credential the file does not give fails the connection, "
          "named in the log and the UNAVAILABLE messages. Empty: libvirt's own search "
          "($LIBVIRT_AUTH_FILE, the URI's authfile=, ~/.config/libvirt/auth.conf, "
          "/etc/libvirt/auth.conf)");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC listen address: host:port (port 0 picks a free port) or unix:/path. "
          "A non-loopback address needs --tls_cert/--tls_key or --insecure");
ABSL_FLAG(std::string, health_listen, "",
          "also serve grpc.health.v1.Health alone, in plaintext, on this address (host:port or "
          "unix:/path; any address: it only says SERVING or NOT_SERVING), for probes that "
          "cannot speak to an mTLS --listen, such as the kubelet's gRPC probe. Not the API, "
          "not reflection. The same statuses as --listen's health. Empty: off");
ABSL_FLAG(std::string, listen_group, "",
          "the group (name or number) given the unix socket of --listen=unix:PATH; it is "
          "mode 0660, so the owner and this group's members may connect");
ABSL_FLAG(int, pool_size, 8, "libvirt connections to hold open (1-64)");
ABSL_FLAG(int, max_calls_per_connection, 1,
          "concurrent libvirt calls admitted per connection (1-5). More than 1 risks a "
          "crash: libvirt 9.0's client can crash when a connection that several threads are "
          "calling on dies. Above 5, libvirtd's max_client_requests, a connection starves its "
          "own keepalive, so more is refused");
ABSL_FLAG(int, workers, 16, "worker threads making libvirt calls (1-1024)");
ABSL_FLAG(int, max_queued_calls, 1024,
          "calls that may wait for a worker; beyond that calls fail at once with "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_replacement_workers, 16,
          "extra workers at most, started while work waits and workers are stuck in libvirt "
          "calls past their deadline (a stalled libvirtd); they exit when the stuck calls "
          "return");
ABSL_FLAG(bool, read_only, true,
          "open libvirt connections read-only (VIR_CONNECT_RO); --read_only=false for "
          "read-write");
ABSL_FLAG(int, keepalive_interval, 5,
          "seconds between libvirt keepalive pings on remote URIs (0 disables)");
ABSL_FLAG(int, keepalive_count, 5,
          "unanswered keepalive pings before a connection is declared dead");
ABSL_FLAG(absl::Duration, reconnect_max_backoff, absl::Seconds(30),
          "longest wait between attempts to reopen a lost libvirt connection (the wait "
          "starts at 200ms and doubles, with jitter)");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "on SIGTERM/SIGINT, how long in-flight calls may take to finish");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate (enables TLS with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)");
ABSL_FLAG(absl::Duration, tls_refresh_interval, absl::Seconds(60),
          "how often --tls_cert, --tls_key and --tls_client_ca are re-read: replace the files "
          "and new connections get the new ones, no restart (a bad new file is logged and the "
          "last good one kept)");
ABSL_FLAG(std::string, authz_policy, "",
          "gRPC authorization policy (gRFC A43 JSON) judging mTLS clients by their certificate; "
          "re-read when it changes. Without it, TLS clients may call the read methods only. "
          "Health and reflection are always allowed");
ABSL_FLAG(absl::Duration, authz_refresh_interval, absl::Seconds(60),
          "how often --authz_policy is re-read (a bad new file is logged and the last good "
          "policy kept)");
ABSL_FLAG(bool, reflection, true,
          "serve gRPC server reflection (grpcurl list/describe); --reflection=false hides it");
ABSL_FLAG(bool, insecure, false,
          "allow plaintext gRPC on a non-loopback --listen address");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(std::string, log_format, "text",
          "text: one line per message (TIME LEVEL virtgated: MESSAGE); json: one JSON object "
          "per line ({\"time\",\"level\",\"logger\",\"message\"}), for log collectors");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:50053",
          "serve Prometheus metrics over HTTP at http://ADDRESS/metrics (host:port; port 0 "
          "picks a free one). A non-loopback address needs --metrics_insecure. Empty: off");
ABSL_FLAG(bool, metrics_insecure, false,
          "allow /metrics (plaintext HTTP; it names every domain and its state) on a "
          "non-loopback --metrics_listen address");
ABSL_FLAG(bool, metrics_domain_series, true,
          "export one virtgate_domain_info series per domain; false leaves only the counts "
          "by state (hosts with very many domains)");
ABSL_FLAG(absl::Duration, bulk_stats_budget, absl::Milliseconds(500),
          "how long a bulk-stats call may take (or 10ms per domain, if more) before "
          "virtgated looks for a guest whose QEMU does not answer and reads the others "
          "without it");
ABSL_FLAG(absl::Duration, max_call_time, absl::Seconds(60),
          "the longest a FRESH ListDomains or GetDomain may take: a call whose client set no "
          "deadline, or a later one, ends with DEADLINE_EXCEEDED here");
ABSL_FLAG(int, event_history, 10000,
          "lifecycle events kept for WatchLifecycle resume (resume_after_sequence)");
ABSL_FLAG(int, watch_queue_depth, 1024,
          "messages a watcher may fall behind before its stream ends with "
          "RESOURCE_EXHAUSTED (it can then resume)");

// Limits on what clients may hold (abuse resistance).
ABSL_FLAG(int, max_request_bytes, 64 * 1024,
          "largest request message accepted; a bigger one is refused by gRPC with "
          "RESOURCE_EXHAUSTED (at least 4096)");
ABSL_FLAG(int, max_watches, 10000,
          "WatchLifecycle streams open at once in total; beyond that a new watch gets "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_watches_per_peer, 1000,
          "WatchLifecycle streams one client may hold open at once (a client is its IP "
          "address, whatever its port; every unix-socket client together is one); beyond "
          "that its new watch gets RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_streams_per_connection, 1100,
          "concurrent calls (HTTP/2 streams) per client connection; a gRPC client queues "
          "more, silently, until one ends. The default lets one connection hold a client's "
          "--max_watches_per_peer watches and still make calls");
ABSL_FLAG(absl::Duration, max_connection_idle, absl::Minutes(5),
          "a client connection with no call open (an open watch is one) for this long is "
          "closed with a GOAWAY; clients reconnect on their next call. 0 keeps idle "
          "connections forever");

namespace virtgate {
namespace {

// virtgated --help, by topic. Every flag defined above belongs to exactly
// one topic here; one left out is listed under kUnfiled by FlagsHelp (and
// server_flags_test fails), so a new flag cannot go missing from --help.
struct Topic {
  const char* title;
  std::vector<const char*> flags;
};
const std::vector<Topic>& Topics() {
  static const auto* topics = new std::vector<Topic>{
      {"libvirt", {"libvirt_uri", "libvirt_auth_file", "read_only", "keepalive_interval",
                   "keepalive_count", "reconnect_max_backoff"}},
      {"calls into libvirt", {"pool_size", "max_calls_per_connection", "workers",
                              "max_queued_calls", "max_replacement_workers", "max_call_time",
                              "bulk_stats_budget"}},
      {"listening, TLS and authorization",
       {"listen", "listen_group", "health_listen", "insecure", "tls_cert", "tls_key",
        "tls_client_ca", "tls_refresh_interval", "authz_policy", "authz_refresh_interval",
        "reflection"}},
      {"limits on clients", {"max_request_bytes", "max_watches", "max_watches_per_peer",
                             "max_streams_per_connection", "max_connection_idle"}},
      {"events and watches", {"event_history", "watch_queue_depth"}},
      {"shutdown", {"shutdown_grace"}},
      {"metrics", {"metrics_listen", "metrics_insecure", "metrics_domain_series"}},
      {"logging", {"log_level", "log_format"}},
  };
  return *topics;
}

constexpr char kUnfiled[] = "not filed under a topic (a bug: add them to Topics() in "
                            "server/server_flags.cc)";

bool IsVirtgatedFlag(const absl::CommandLineFlag& flag) {
  return absl::StrContains(flag.Filename(), "server/server_flags.cc");
}

// "--name (default: value)" and the help, wrapped to 80 columns.
void AppendFlagHelp(const absl::CommandLineFlag& flag, std::string* out) {
  const std::string value = flag.DefaultValue();
  absl::StrAppend(out, "  --", flag.Name(), " (default: ", value.empty() ? "none" : value, ")\n");
  std::string line = "     ";
  for (absl::string_view word : absl::StrSplit(flag.Help(), ' ', absl::SkipEmpty())) {
    if (line.size() > 5 && line.size() + 1 + word.size() > 80) {
      absl::StrAppend(out, line, "\n");
      line = "     ";
    }
    absl::StrAppend(&line, " ", word);
  }
  absl::StrAppend(out, line, "\n");
}

absl::Status LimitsFromFlags(Server::Options* options) {
  ConnectionLimits& c = options->connection_limits;
  c.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  c.max_streams_per_connection = absl::GetFlag(FLAGS_max_streams_per_connection);
  c.max_connection_idle = absl::GetFlag(FLAGS_max_connection_idle);
  if (absl::Status s = ValidateConnectionLimits(c); !s.ok()) return s;
  const int watches = absl::GetFlag(FLAGS_max_watches);
  const int per_peer = absl::GetFlag(FLAGS_max_watches_per_peer);
  if (watches < 1 || per_peer < 1) {
    return absl::InvalidArgumentError("--max_watches and --max_watches_per_peer must be >= 1");
  }
  options->watch_limits.max_watches = static_cast<size_t>(watches);
  options->watch_limits.max_watches_per_peer = static_cast<size_t>(per_peer);
  return absl::OkStatus();
}

}  // namespace

bool WantsHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") return false;  // what follows is not a flag
    if (arg == "-h" || absl::StartsWith(arg, "--help") || absl::StartsWith(arg, "-help")) {
      return true;
    }
  }
  return false;
}

std::string FlagsHelp() {
  std::string out =
      "virtgated: gRPC access to one hypervisor through libvirt.\n"
      "\n"
      "Usage: virtgated [--FLAG=VALUE]...\n"
      "  virtgated --libvirt_uri=test:///default\n"
      "  virtgated --libvirt_uri=qemu:///system --listen=unix:/run/virtgate/virtgate.sock\n"
      "\n"
      "Every flag can also be given as the environment variable VIRTGATE_<FLAG IN UPPER\n"
      "CASE>, e.g. VIRTGATE_LIBVIRT_URI=test:///default or VIRTGATE_READ_ONLY=false; the\n"
      "command line wins. SIGTERM or SIGINT shuts down gracefully (exit 0). A value\n"
      "virtgated refuses, or a bad VIRTGATE_* variable, exits 2; an unknown flag, a value\n"
      "that does not parse, or a server that cannot start exits 1.\n";
  const absl::flat_hash_map<absl::string_view, absl::CommandLineFlag*> all = absl::GetAllFlags();
  absl::flat_hash_set<absl::string_view> filed;
  for (const Topic& topic : Topics()) {
    absl::StrAppend(&out, "\n", topic.title, ":\n");
    for (const char* name : topic.flags) {
      auto it = all.find(name);
      if (it == all.end()) continue;  // a flag another binary leaves out
      AppendFlagHelp(*it->second, &out);
      filed.insert(it->first);
    }
  }
  std::vector<absl::CommandLineFlag*> unfiled;
  for (const auto& [name, flag] : all) {
    if (IsVirtgatedFlag(*flag) && !filed.contains(name)) unfiled.push_back(flag);
  }
  if (!unfiled.empty()) {
    std::sort(unfiled.begin(), unfiled.end(), [](auto* a, auto* b) { return a->Name() < b->Name(); });
    absl::StrAppend(&out, "\n", kUnfiled, ":\n");
    for (const absl::CommandLineFlag* flag : unfiled) AppendFlagHelp(*flag, &out);
  }
  return out;
}

absl::Status FlagsFromEnvironment() {
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!IsVirtgatedFlag(*flag)) continue;
    const std::string variable = absl::StrCat("VIRTGATE_", absl::AsciiStrToUpper(name));
    const char* value = getenv(variable.c_str());
    if (value == nullptr) continue;
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat(variable, ": ", error));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Server::Options> OptionsFromFlags() {
  Server::Options options;
  options.libvirt_uri = absl::GetFlag(FLAGS_libvirt_uri);
  options.libvirt_auth_file = absl::GetFlag(FLAGS_libvirt_auth_file);
  options.listen = absl::GetFlag(FLAGS_listen);
  options.listen_group = absl::GetFlag(FLAGS_listen_group);
  options.health_listen = absl::GetFlag(FLAGS_health_listen);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.metrics_insecure = absl::GetFlag(FLAGS_metrics_insecure);
  options.metrics_domain_series = absl::GetFlag(FLAGS_metrics_domain_series);
  options.pool_size = absl::GetFlag(FLAGS_pool_size);
  options.max_calls_per_connection = absl::GetFlag(FLAGS_max_calls_per_connection);
  if (absl::Status s = CheckMaxCallsPerConnection(options.max_calls_per_connection); !s.ok()) {
    return s;  // a usage error (exit 2), not a failure to start
  }
  options.workers = absl::GetFlag(FLAGS_workers);
  options.max_queued_calls = absl::GetFlag(FLAGS_max_queued_calls);
  options.max_replacement_workers = absl::GetFlag(FLAGS_max_replacement_workers);
  options.read_only = absl::GetFlag(FLAGS_read_only);
  options.keepalive_interval_s = absl::GetFlag(FLAGS_keepalive_interval);
  options.keepalive_count = absl::GetFlag(FLAGS_keepalive_count);
  options.reconnect_max_backoff = absl::GetFlag(FLAGS_reconnect_max_backoff);
  if (options.reconnect_max_backoff < absl::Milliseconds(200)) {
    return absl::InvalidArgumentError("--reconnect_max_backoff must be at least 200ms");
  }
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.tls_refresh_interval = absl::GetFlag(FLAGS_tls_refresh_interval);
  options.authz_policy_file = absl::GetFlag(FLAGS_authz_policy);
  options.authz_refresh_interval = absl::GetFlag(FLAGS_authz_refresh_interval);
  if (options.authz_refresh_interval < absl::Seconds(1)) {
    return absl::InvalidArgumentError("--authz_refresh_interval must be at least 1s");
  }
  options.reflection = absl::GetFlag(FLAGS_reflection);
  options.insecure = absl::GetFlag(FLAGS_insecure);
  if (absl::GetFlag(FLAGS_event_history) < 1 || absl::GetFlag(FLAGS_watch_queue_depth) < 1) {
    return absl::InvalidArgumentError("--event_history and --watch_queue_depth must be >= 1");
  }
  options.event_history = absl::GetFlag(FLAGS_event_history);
  options.bulk_stats_budget = absl::GetFlag(FLAGS_bulk_stats_budget);
  options.max_call_time = absl::GetFlag(FLAGS_max_call_time);
  if (options.bulk_stats_budget <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--bulk_stats_budget must be positive");
  }
  options.watch_queue_depth = absl::GetFlag(FLAGS_watch_queue_depth);
  if (absl::Status s = LimitsFromFlags(&options); !s.ok()) return s;
  return options;
}

}  // namespace virtgate
