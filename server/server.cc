#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/base/log.h"
#include "server/base/quote.h"
#include "server/libvirt/auth_file.h"
#include "server/rpc/tls_credentials.h"
#include "server/rpc/watch_reactor.h"
#include "server/rpc/without_reflection.h"
#include "server/server_metrics.h"

namespace virtgate {
namespace {

// Plaintext, or TLS whose files gRPC re-reads (TlsFiles), and then the
// authorization policy that judges each call by its client certificate.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const Server::Options& o, const ListenAddress& listen,
    std::unique_ptr<StagedTlsFiles>* tls_files, std::shared_ptr<Authorizer>* authorizer) {
  const bool tls = !o.tls_cert_file.empty() || !o.tls_key_file.empty();
  if (!tls) {
    if (!o.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    }
    if (!o.authz_policy_file.empty()) {
      return absl::InvalidArgumentError(
          "--authz_policy needs TLS (--tls_cert, --tls_key and --tls_client_ca): a plaintext "
          "client has no identity to authorize");
    }
    if (!listen.loopback && !o.insecure) {
      return absl::InvalidArgumentError(absl::StrCat(
          "refusing to serve plaintext on non-loopback address ", o.listen,
          ": give --tls_cert and --tls_key, or --insecure to accept the risk"));
    }
    if (!listen.loopback) {
      LogWarning("serving PLAINTEXT on non-loopback ", o.listen, " (--insecure): anyone who "
                 "can reach it may call every method, unauthenticated and unencrypted");
    }
    return grpc::InsecureServerCredentials();
  }
  absl::StatusOr<std::unique_ptr<StagedTlsFiles>> staged = StagedTlsFiles::Start(
      {o.tls_cert_file, o.tls_key_file, o.tls_client_ca_file, o.tls_refresh_interval});
  if (!staged.ok()) return staged.status();
  absl::StatusOr<std::shared_ptr<Authorizer>> authz =
      Authorizer::Create({o.authz_policy_file, o.authz_refresh_interval});
  if (!authz.ok()) return authz.status();
  std::shared_ptr<grpc::ServerCredentials> creds = (*staged)->Credentials();
  creds->SetAuthMetadataProcessor(*authz);
  *tls_files = *std::move(staged);
  *authorizer = *std::move(authz);
  return creds;
}

// --listen_group: the group whose members may connect to the unix socket
// (mode 0660), by name or number.
absl::Status GiveSocketToGroup(const std::string& path, const std::string& group) {
  gid_t gid = 0;
  if (!absl::SimpleAtoi(group, &gid)) {
    std::vector<char> buffer(16384);
    struct group entry {};
    struct group* found = nullptr;
    if (getgrnam_r(group.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
        found == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("--listen_group: no group ", Quote(group)));
    }
    gid = found->gr_gid;
  }
  if (chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("--listen_group: cannot give ", path,
                                                    " to group ", Quote(group), ": ",
                                                    std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(const Server::Options& options) {
  if (options.workers < 1 || options.workers > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("--workers must be between 1 and 1024, got ", options.workers));
  }
  if (options.max_queued_calls < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_queued_calls must not be negative, got ", options.max_queued_calls));
  }
  if (options.max_replacement_workers < 0 || options.max_replacement_workers > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_replacement_workers must be between 0 and 1024, got ",
        options.max_replacement_workers));
  }
  if (!options.listen_group.empty() && !absl::StartsWith(options.listen, "unix:")) {
    return absl::InvalidArgumentError("--listen_group applies to a unix socket (--listen=unix:PATH)");
  }
  // The same address twice (but port 0, which picks two free ports).
  struct OwnPort {
    const std::string& address;
    const char* why;
  };
  for (const OwnPort& other :
       {OwnPort{options.health_listen,
                "--health_listen must differ from --listen: it serves health alone, on a port "
                "of its own"},
        OwnPort{options.metrics_listen,
                "--metrics_listen must differ from --listen: it serves HTTP, on a port of its "
                "own"}}) {
    if (!other.address.empty() && other.address == options.listen &&
        !absl::EndsWith(options.listen, ":0")) {
      return absl::InvalidArgumentError(other.why);
    }
  }
  if (options.max_call_time <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--max_call_time must be positive");
  }
  return ValidateConnectionLimits(options.connection_limits);
}

// `text` parsed as an address for `flag`, or nullopt when it is empty (off).
absl::StatusOr<std::optional<ListenAddress>> OptionalListen(const std::string& text,
                                                            const std::string& flag) {
  if (text.empty()) return std::nullopt;
  absl::StatusOr<ListenAddress> parsed = ParseListenAddress(text, flag);
  if (!parsed.ok()) return parsed.status();
  return std::optional<ListenAddress>(*std::move(parsed));
}

// --metrics_listen: HTTP on TCP only, and off loopback only with
// --metrics_insecure (it is plaintext).
absl::StatusOr<std::optional<ListenAddress>> MetricsListen(const Server::Options& o) {
  absl::StatusOr<std::optional<ListenAddress>> m =
      OptionalListen(o.metrics_listen, "--metrics_listen");
  if (!m.ok() || !m->has_value()) return m;
  if ((*m)->unix_socket) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics_listen=", o.metrics_listen, ": serves HTTP on TCP only (HOST:PORT); "
        "Prometheus cannot scrape a unix socket"));
  }
  if (!(*m)->loopback && !o.metrics_insecure) {
    return absl::InvalidArgumentError(absl::StrCat(
        "refusing to serve /metrics in plaintext on non-loopback address ", o.metrics_listen,
        ": it names every domain and its state; give --metrics_insecure to accept that (and "
        "limit who reaches the port), or serve it on loopback"));
  }
  return m;
}

ConnectOptions Connect(const Server::Options& o) {
  return {o.libvirt_uri, o.read_only, o.keepalive_interval_s, o.keepalive_count,
          o.libvirt_auth_file};
}

ConnectionPool::Options PoolOptions(const Server::Options& o) {
  ConnectionPool::Options pool;
  pool.connect = Connect(o);
  pool.size = o.pool_size;
  pool.max_calls_per_connection = o.max_calls_per_connection;
  pool.max_backoff = o.reconnect_max_backoff;
  return pool;
}

LifecycleFeed::Options FeedOptions(const Server::Options& o) {
  LifecycleFeed::Options feed;
  feed.connect = Connect(o);
  feed.max_backoff = o.reconnect_max_backoff;
  return feed;
}

}  // namespace

bool IsLoopbackOrUnix(const std::string& listen) {
  absl::StatusOr<ListenAddress> parsed = ParseListenAddress(listen);
  return parsed.ok() && parsed->loopback;
}

absl::StatusOr<std::unique_ptr<Server>> Server::BuildAndStart(Options options) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  if (!options.libvirt_auth_file.empty()) {
    if (absl::Status s = CheckAuthFile(options.libvirt_auth_file, options.libvirt_uri); !s.ok()) {
      return s;
    }
    LogInfo("libvirt credentials from ", options.libvirt_auth_file);
  }
  absl::StatusOr<ListenAddress> listen = ParseListenAddress(options.listen);
  if (!listen.ok()) return listen.status();
  absl::StatusOr<std::optional<ListenAddress>> health_listen =
      OptionalListen(options.health_listen, "--health_listen");
  if (!health_listen.ok()) return health_listen.status();
  absl::StatusOr<std::optional<ListenAddress>> metrics_listen = MetricsListen(options);
  if (!metrics_listen.ok()) return metrics_listen.status();
  std::unique_ptr<StagedTlsFiles> tls_files;
  std::shared_ptr<Authorizer> authorizer;
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds =
      Credentials(options, *listen, &tls_files, &authorizer);
  if (!creds.ok()) return creds.status();
  std::unique_ptr<Server> server(new Server(std::move(options)));
  server->tls_files_ = std::move(tls_files);
  server->authorizer_ = std::move(authorizer);
  server->listen_ = *std::move(listen);
  server->health_listen_ = *std::move(health_listen);
  server->metrics_listen_ = *std::move(metrics_listen);
  const Options& o = server->options_;

  server->workers_ = std::make_unique<WorkerPool>(
      WorkerPool::Options{o.workers, o.max_queued_calls, o.max_replacement_workers});
  absl::StatusOr<std::unique_ptr<ConnectionPool>> pool =
      ConnectionPool::Create(PoolOptions(o), server->availability_, server->reconnect_);
  if (!pool.ok()) return pool.status();
  server->pool_ = *std::move(pool);
  server->hub_ = std::make_shared<EventHub>(EventHub::Options{o.event_history, o.watch_queue_depth});
  LogInfo("event epoch ", server->hub_->epoch());
  server->cache_ = std::make_shared<DomainCache>(DomainCache::Options{}, server->hub_,
                                                 server->availability_);
  server->feed_ = LifecycleFeed::Start(FeedOptions(o), server->cache_, server->host_,
                                       server->reads_, server->reconnect_);
  server->WaitForLibvirt();

  if (absl::Status s = server->BuildReadsAndService(); !s.ok()) return s;

  // /metrics first: a port it cannot have fails the start before clients
  // are served. (A later failure stops it with the Server.)
  absl::Status started = server->StartMetrics();
  if (started.ok()) started = server->StartGrpc(*std::move(creds));
  if (absl::Status s = started; !s.ok()) {
    server->StopLibvirt(absl::Now() + absl::Seconds(1));
    return s;
  }
  std::vector<grpc::HealthCheckServiceInterface*> health = {server->health_service_.get()};
  if (server->health_listener_) health.push_back(server->health_listener_->service());
  server->health_ = std::make_unique<HealthReporter>(server->availability_, std::move(health));
  LogInfo("serving virtgate.v1.Hypervisor on ", server->address_, " for ", o.libvirt_uri,
          o.read_only ? " (read-only)" : " (read-write)", "; ", o.pool_size,
          " call connections, ", o.workers, " workers",
          server->health_listener_
              ? absl::StrCat("; grpc.health.v1 alone, plaintext, on ",
                             server->health_listener_->address(), " (--health_listen)")
              : "",
          server->metrics_listener_
              ? absl::StrCat("; Prometheus metrics on http://", server->metrics_listener_->address(),
                             "/metrics")
              : "");
  return server;
}

absl::Status Server::BuildReadsAndService() {
  const Options& o = options_;
  stats_ = std::make_shared<BulkStatsReader>(
      BulkStatsReader::Options{o.pool_size * o.max_calls_per_connection, o.max_replacement_workers,
                               o.bulk_stats_budget},
      pool_, reads_);
  auto facts = std::make_shared<FactsReader>(stats_, reads_);
  absl::StatusOr<PageTokenKey> key = PageTokenKey::Random();
  if (!key.ok()) return key.status();
  auto tokens = std::make_shared<const PageTokenKey>(*std::move(key));
  lister_ = std::make_shared<DomainLister>(
      cache_, std::make_shared<ListingSnapshots>(ListingSnapshots::Options{}), pool_, reads_, facts,
      std::make_shared<LibvirtLister>(cache_, pool_, reads_, facts, tokens), tokens);
  timers_ = std::make_unique<TimerThread>();
  service_ = std::make_unique<HypervisorService>(
      HypervisorService::Deps{PageLimits{}, tokens, o.watch_limits,
                              CallRunner{workers_.get(), timers_.get(), o.max_call_time}, lister_,
                              cache_, hub_, timers_.get(), pool_, stats_, host_, feed_.get(),
                              rpc_metrics_});
  return absl::OkStatus();
}

void Server::WaitForLibvirt() {
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  if (!pool_->WaitForFirstAttempt(deadline)) {
    LogWarning("libvirt at ", options_.libvirt_uri, " has not answered within 5s; serving "
               "NOT_SERVING until it does");
  } else if (!feed_->WaitForFirstAttempt(deadline)) {
    LogWarning("the event connection to ", options_.libvirt_uri, " is not set up after 5s; "
               "calls are served, events (", kEventsHealthService,
               ") are NOT_SERVING until it is");
  }
}

absl::Status Server::StartGrpc(std::shared_ptr<grpc::ServerCredentials> credentials) {
  if (health_listen_.has_value()) {
    absl::StatusOr<std::unique_ptr<HealthListener>> health =
        HealthListener::Start(*health_listen_, options_.connection_limits);
    if (!health.ok()) return health.status();
    health_listener_ = *std::move(health);
  }
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Request size, streams per connection, idle connections, HTTP/2 pings.
  ApplyConnectionLimits(options_.connection_limits, &builder);
  builder.RegisterService(service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  // The API, health and reflection by name; any other path as "unknown".
  for (const char* name : {v1::Hypervisor::service_full_name(), "grpc.health.v1.Health",
                           "grpc.reflection.v1alpha.ServerReflection"}) {
    if (const google::protobuf::ServiceDescriptor* service =
            google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name)) {
      rpc_metrics_->Preregister(*service);
    }
  }
  // Watches report themselves: an interceptor would cost each of their
  // messages a second trip through gRPC's completion queue (rpc_metrics.h).
  interceptors.push_back(RpcMetrics::InterceptorFactory(rpc_metrics_, {kWatchLifecycleMethod}));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.RegisterService(health_service_.get());
  if (!options_.reflection) builder.SetOption(std::make_unique<WithoutReflection>());
  absl::StatusOr<Listening> listening = StartListening(listen_, std::move(credentials), &builder);
  if (!listening.ok()) return listening.status();
  grpc_server_ = std::move(listening->server);
  listen_lock_fd_ = listening->lock_fd;
  if (listen_.unix_socket && !options_.listen_group.empty()) {
    if (absl::Status s = GiveSocketToGroup(listen_.path, options_.listen_group); !s.ok()) {
      grpc_server_->Shutdown();
      grpc_server_.reset();
      return s;
    }
  }
  port_ = listening->port;
  address_ = std::move(listening->address);
  return absl::OkStatus();
}

absl::Status Server::StartMetrics() {
  if (!metrics_listen_.has_value()) return absl::OkStatus();
  if (!metrics_listen_->loopback) {
    LogWarning("serving /metrics in PLAINTEXT on non-loopback ", options_.metrics_listen,
               " (--metrics_insecure): anyone who can reach it sees every domain's name and "
               "state");
  }
  auto metrics = std::make_shared<ServerMetrics>(
      ServerMetrics::Options{options_.metrics_domain_series, options_.libvirt_uri},
      ServerMetrics::Deps{rpc_metrics_, calls_, pool_, feed_.get(), workers_.get(), stats_,
                          cache_, hub_, availability_});
  absl::StatusOr<std::unique_ptr<MetricsListener>> listener =
      MetricsListener::Start(*metrics_listen_, std::move(metrics));
  if (!listener.ok()) return listener.status();
  metrics_listener_ = *std::move(listener);
  return absl::OkStatus();
}

void Server::StopLibvirt(absl::Time deadline) {
  const int abandoned = workers_->Shutdown(deadline);
  if (abandoned > 0) {
    LogWarning("shutdown: abandoned ", abandoned,
               " worker(s) still inside libvirt calls after the grace period");
  }
  if (stats_) stats_->Shutdown(deadline);
  feed_->Shutdown(deadline);
  pool_->Shutdown(deadline);
}

void Server::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&shutdown_mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  const absl::Time deadline = absl::Now() + grace;
  // NOT_SERVING first, and for good: load balancers drain us while we finish.
  health_->Stop();
  health_service_->Shutdown();  // and ends health watches, which would hold us
  // Watches never end by themselves: end them now, telling clients where to
  // resume, rather than holding shutdown for the whole grace period.
  const size_t watches = service_->open_watches();
  service_->EndWatches();
  if (watches > 0) LogInfo("shutdown: ended ", watches, " open watch(es)");
  if (health_listener_) health_listener_->service()->Shutdown();  // NOT_SERVING there too
  grpc_server_->Shutdown(absl::ToChronoTime(deadline));
  // Probes of the health port hear NOT_SERVING until the API server is down.
  if (health_listener_) health_listener_->Shutdown(deadline);
  StopLibvirt(deadline);
  if (metrics_listener_) metrics_listener_->Shutdown();
  LogInfo("shut down");
}

void Server::Wait() { grpc_server_->Wait(); }

Server::~Server() {
  if (grpc_server_) Shutdown(absl::ZeroDuration());
  if (listen_lock_fd_ >= 0) close(listen_lock_fd_);
}

}  // namespace virtgate
