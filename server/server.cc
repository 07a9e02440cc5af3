#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <arpa/inet.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/lifecycle_events.h"
#include "server/log.h"

namespace virtgate {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", what, " ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const Server::Options& o) {
  const bool tls = !o.tls_cert_file.empty() || !o.tls_key_file.empty();
  if (!tls) {
    if (!o.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    }
    if (!IsLoopbackOrUnix(o.listen) && !o.insecure) {
      return absl::InvalidArgumentError(absl::StrCat(
          "refusing to serve plaintext on non-loopback address ", o.listen,
          ": give --tls_cert and --tls_key, or --insecure to accept the risk"));
    }
    return grpc::InsecureServerCredentials();
  }
  if (o.tls_cert_file.empty() || o.tls_key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls_cert and --tls_key");
  }
  absl::StatusOr<std::string> cert = ReadFile(o.tls_cert_file, "--tls_cert");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFile(o.tls_key_file, "--tls_key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!o.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadFile(o.tls_client_ca_file, "--tls_client_ca");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

bool IsLoopbackOrUnix(const std::string& listen) {
  if (absl::StartsWith(listen, "unix:")) return true;
  absl::string_view host = listen;
  if (absl::StartsWith(host, "[")) {
    return absl::StartsWith(host, "[::1]");
  }
  host = host.substr(0, host.rfind(':'));
  if (host == "localhost") return true;
  // Only a literal 127.0.0.0/8 address: "127.example.com" is a name.
  in_addr addr;
  return inet_pton(AF_INET, std::string(host).c_str(), &addr) == 1 &&
         (ntohl(addr.s_addr) >> 24) == 127;
}

absl::StatusOr<std::unique_ptr<Server>> Server::BuildAndStart(Options options) {
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
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = Credentials(options);
  if (!creds.ok()) return creds.status();

  std::unique_ptr<Server> server(new Server());
  server->options_ = options;

  // Events first: the pool registers for them as soon as it connects.
  server->facts_ = std::make_shared<DomainFactsCache>();
  server->hub_ = std::make_shared<EventHub>(
      EventHub::Options{options.event_history, options.watch_queue_depth});
  LogInfo("event epoch ", server->hub_->epoch());
  server->mirror_ = std::make_shared<LifecycleMirror>(server->hub_);
  LifecycleEventSource events(server->mirror_, server->facts_);
  server->lister_ = std::make_shared<DomainLister>(DomainLister::Options{}, server->facts_);

  ConnectionPool::Options pool_options;
  pool_options.uri = options.libvirt_uri;
  pool_options.size = options.pool_size;
  pool_options.read_only = options.read_only;
  pool_options.max_calls_per_connection = options.max_calls_per_connection;
  pool_options.keepalive_interval_s = options.keepalive_interval_s;
  pool_options.keepalive_count = options.keepalive_count;
  pool_options.max_backoff = options.reconnect_max_backoff;
  // On every (re)open of the event connection: register, then list, so the
  // mirror can tell watchers what changed while nobody was listening.
  server->host_facts_ = std::make_shared<HostFacts>();
  pool_options.on_event_connection = [events, mirror = server->mirror_, lister = server->lister_,
                                      host = server->host_facts_](virConnectPtr conn) {
    // Host facts first, so GetHostInfo has them as soon as we serve.
    if (absl::Status s = host->Refresh(conn); !s.ok()) {
      LogWarning("cannot read host facts: ", s.message());
    }
    mirror->BeginResync();
    if (absl::Status s = events.Register(conn); !s.ok()) {
      if (s.code() != absl::StatusCode::kUnimplemented) {
        mirror->FinishResync(s);
        return s;
      }
      LogWarning("this libvirt driver has no lifecycle events; watches will see none: ",
                 s.message());
    }
    // States only: no per-domain calls, however many domains there are, and
    // none a frozen QEMU can hold up. (A stopped libvirtd holds it up until
    // keepalive gives up, like an open; meanwhile the other slots are not
    // reopened.)
    absl::StatusOr<std::vector<v1::Domain>> listed =
        lister->ListEverything(conn, absl::InfiniteFuture(), /*need_facts=*/false);
    absl::Status status = listed.status();
    mirror->FinishResync(std::move(listed));
    if (!status.ok()) events.Deregister(conn);  // the pool closes it
    return status;
  };
  pool_options.on_event_connection_closing = [events](virConnectPtr conn) {
    events.Deregister(conn);
  };
  // The lister may move a listing off a connection a stuck call poisons. The
  // hooks are set before the pool exists (its maintenance thread lists at
  // once) and reach it weakly (the pool's own hooks hold the lister).
  struct PoolRef {
    absl::Mutex mu;
    std::weak_ptr<ConnectionPool> pool ABSL_GUARDED_BY(mu);
    std::shared_ptr<ConnectionPool> Get() {
      absl::MutexLock lock(&mu);
      return pool.lock();
    }
  };
  auto pool_ref = std::make_shared<PoolRef>();
  server->lister_->SetConnectionHooks(
      {[pool_ref](virConnectPtr conn) {
         std::shared_ptr<ConnectionPool> p = pool_ref->Get();
         return p != nullptr && p->Retire(conn);
       },
       [pool_ref](absl::Time deadline) -> absl::StatusOr<ConnectionPool::Lease> {
         std::shared_ptr<ConnectionPool> p = pool_ref->Get();
         if (p == nullptr) return absl::UnavailableError("hypervisor connections not ready");
         return p->Acquire(deadline);
       },
       [pool_ref](virConnectPtr conn) -> std::optional<ConnectionPool::Lease> {
         std::shared_ptr<ConnectionPool> p = pool_ref->Get();
         if (p == nullptr) return std::nullopt;
         return p->Hold(conn);
       }});
  pool_options.on_event_connection_lost = [mirror = server->mirror_](const std::string& why) {
    mirror->OnLost(why);
  };
  absl::StatusOr<std::unique_ptr<ConnectionPool>> pool = ConnectionPool::Create(pool_options);
  if (!pool.ok()) return pool.status();
  server->connections_ = *std::move(pool);
  {
    absl::MutexLock lock(&pool_ref->mu);
    pool_ref->pool = server->connections_;
  }

  server->workers_ = std::make_unique<WorkerPool>(
      WorkerPool::Options{options.workers, options.max_queued_calls,
                          options.max_replacement_workers});
  server->timers_ = std::make_unique<TimerThread>();
  server->service_ = std::make_unique<HypervisorService>(
      server->workers_.get(), server->connections_, server->lister_, server->hub_,
      server->mirror_, server->host_facts_, server->timers_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(options.listen, *creds, &selected_port);
  // Watches are long and often idle: let clients keep them alive with HTTP/2
  // pings (every 10 s at most) to find half-open connections.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.RegisterService(server->service_.get());
  server->grpc_server_ = builder.BuildAndStart();
  if (!server->grpc_server_ || selected_port == 0) {
    server->connections_->Shutdown(absl::Now() + absl::Seconds(1));
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen,
                     " (address in use, bad address, or no permission)"));
  }
  server->port_ = selected_port;
  if (absl::StartsWith(options.listen, "unix:")) {
    server->address_ = options.listen;
  } else {
    const std::string host = options.listen.substr(0, options.listen.rfind(':'));
    server->address_ = absl::StrCat(host, ":", selected_port);
  }

  // Health follows libvirt: SERVING while a connection is up.
  grpc::HealthCheckServiceInterface* health = server->grpc_server_->GetHealthCheckService();
  server->connections_->SetAvailabilityListener([health](bool up) {
    health->SetServingStatus(up);
    health->SetServingStatus(v1::Hypervisor::service_full_name(), up);
  });
  LogInfo("serving virtgate.v1.Hypervisor on ", server->address_, " for ", options.libvirt_uri,
          options.read_only ? " (read-only)" : " (read-write)", "; ", options.pool_size,
          " connections, ", options.workers, " workers");
  return server;
}

void Server::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&shutdown_mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  const absl::Time deadline = absl::Now() + grace;
  // NOT_SERVING first, and for good: load balancers drain us while we finish.
  connections_->SetAvailabilityListener(nullptr);
  grpc_server_->GetHealthCheckService()->Shutdown();
  // Watches never end by themselves: end them now, telling clients where to
  // resume, rather than holding shutdown for the whole grace period.
  const size_t watches = service_->open_watches();
  service_->EndWatches();
  if (watches > 0) LogInfo("shutdown: ended ", watches, " open watch(es)");
  grpc_server_->Shutdown(absl::ToChronoTime(deadline));
  const int abandoned = workers_->Shutdown(deadline);
  if (abandoned > 0) {
    LogWarning("shutdown: abandoned ", abandoned,
               " worker(s) still inside libvirt calls after the grace period");
  }
  connections_->Shutdown(deadline);
  LogInfo("shut down");
}

void Server::Wait() { grpc_server_->Wait(); }

Server::~Server() {
  if (grpc_server_) Shutdown(absl::ZeroDuration());
}

}  // namespace virtgate
