// Server: builds and owns everything virtgated runs, in the order of the
// path of a call (README "Architecture"):
//   workers -> call pool -> hub + domain cache -> lifecycle feed ->
//   readers and lister -> gRPC service (+ health, reflection; health alone
//   on a second server with --health_listen) -> /metrics (--metrics_listen)
// and tears it down in the reverse order.
//
// main.cc only turns flags into Options; tests build the same Server
// in-process (listen on 127.0.0.1:0 or a unix socket).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/base/timer_thread.h"
#include "server/libvirt/bulk_stats_reader.h"
#include "server/libvirt/call_counts.h"
#include "server/libvirt/connection_pool.h"
#include "server/libvirt/domain_reads.h"
#include "server/libvirt/host_info_reader.h"
#include "server/libvirt/lifecycle_feed.h"
#include "server/libvirt/worker_pool.h"
#include "server/metrics/metrics_listener.h"
#include "server/reads/domain_lister.h"
#include "server/reads/facts_reader.h"
#include "server/reads/libvirt_lister.h"
#include "server/rpc/authorizer.h"
#include "server/rpc/connection_limits.h"
#include "server/rpc/health_listener.h"
#include "server/rpc/health_reporter.h"
#include "server/rpc/health_service.h"
#include "server/rpc/hypervisor_service.h"
#include "server/rpc/listen_address.h"
#include "server/rpc/rpc_metrics.h"
#include "server/rpc/tls_credentials.h"
#include "server/rpc/watch_registry.h"
#include "server/state/availability.h"
#include "server/state/domain_cache.h"
#include "server/state/event_hub.h"

namespace virtgate {

class Server {
 public:
  struct Options {
    std::string libvirt_uri = "qemu:///system";
    // A libvirt auth.conf with the credentials libvirt asks for (e.g. a
    // SASL login); refused at start unless only our user can read it (see
    // CheckAuthFile). Empty: libvirt's own search. Never a prompt.
    std::string libvirt_auth_file;
    // "host:port" (port 0 picks a free one) or "unix:/path".
    std::string listen = "127.0.0.1:50051";
    // A unix socket's group (name or number), whose members may connect.
    std::string listen_group;
    int pool_size = 8;
    int max_calls_per_connection = 1;
    bool read_only = true;
    int workers = 16;
    int max_queued_calls = 1024;
    // Extra workers at most, standing in for ones stuck in a stalled libvirt.
    int max_replacement_workers = 16;
    int keepalive_interval_s = 5;
    int keepalive_count = 5;
    // Longest wait between attempts to reopen a lost libvirt connection.
    absl::Duration reconnect_max_backoff = absl::Seconds(30);
    size_t event_history = 10000;
    // How long a bulk-stats call may take before a frozen guest is looked
    // for (see BulkStatsReader).
    absl::Duration bulk_stats_budget = absl::Milliseconds(500);
    // The longest a FRESH ListDomains or GetDomain may take, whatever the
    // client's deadline (or none): then DEADLINE_EXCEEDED.
    absl::Duration max_call_time = absl::Seconds(60);
    size_t watch_queue_depth = 1024;
    // What clients may hold: request size, streams per connection, idle
    // connections (ConnectionLimits), open watches in total and per client
    // (WatchLimits).
    ConnectionLimits connection_limits;
    WatchLimits watch_limits;
    // TLS: both files set -> TLS; client CA set too -> clients must present a
    // certificate it signed (mTLS). Plaintext on a non-loopback address is
    // refused unless `insecure` is set.
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string tls_client_ca_file;
    // How often the TLS files are re-read (a rotated certificate is served
    // without a restart).
    absl::Duration tls_refresh_interval = absl::Seconds(60);
    bool insecure = false;
    // gRFC A43 policy judging TLS clients by their certificate (empty: the
    // built-in read-only policy), re-read this often.
    std::string authz_policy_file;
    absl::Duration authz_refresh_interval = absl::Seconds(60);
    // Serve gRPC reflection (grpcurl's list/describe).
    bool reflection = true;
    // Also serve grpc.health.v1 alone, in plaintext, here (HealthListener);
    // empty: not at all.
    std::string health_listen;
    // Serve Prometheus metrics over HTTP here (MetricsListener); empty: not
    // at all (the default here, so in-process servers never share a port;
    // virtgated's flag defaults to 127.0.0.1:50053). A non-loopback address
    // needs metrics_insecure: /metrics is plaintext only.
    std::string metrics_listen;
    bool metrics_insecure = false;
    // One virtgate_domain_info series per domain.
    bool metrics_domain_series = true;
  };

  static absl::StatusOr<std::unique_ptr<Server>> BuildAndStart(Options options);
  ~Server();  // Shutdown(absl::ZeroDuration()) if not done yet

  // The address clients can dial: "127.0.0.1:41234" (port resolved) or
  // "unix:/path".
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // Where --health_listen serves health alone (port resolved), or "".
  std::string health_address() const {
    return health_listener_ ? health_listener_->address() : "";
  }
  // Where --metrics_listen serves /metrics (port resolved), or "".
  std::string metrics_address() const {
    return metrics_listener_ ? metrics_listener_->address() : "";
  }

  // Stops accepting calls, reports NOT_SERVING, lets in-flight calls finish
  // for up to `grace`, then cancels the rest, abandons workers stuck in
  // libvirt, and closes the libvirt connections. Idempotent; thread-safe.
  void Shutdown(absl::Duration grace);

  // Blocks until the gRPC server has shut down.
  void Wait();

  WorkerPool* workers() { return workers_.get(); }
  ConnectionPool* connections() { return pool_.get(); }
  EventHub* events() { return hub_.get(); }
  DomainCache* cache() { return cache_.get(); }
  const CallCounts& libvirt_calls() const { return *calls_; }
  HypervisorService* service() { return service_.get(); }
  const RpcMetrics& rpc_metrics() const { return *rpc_metrics_; }

 private:
  explicit Server(Options options) : options_(std::move(options)) {}

  // The readers (bulk stats, facts, listings) and the gRPC service over
  // them; fails only if no page-token key can be made.
  absl::Status BuildReadsAndService();
  // Starts the health-only server (--health_listen), if asked, then the
  // gRPC server; sets address_ and port_.
  absl::Status StartGrpc(std::shared_ptr<grpc::ServerCredentials> credentials);
  // Starts /metrics (--metrics_listen), if asked.
  absl::Status StartMetrics();
  // Waits (5 s at most) for the first attempts to reach libvirt, so a
  // reachable one is serving when BuildAndStart returns.
  void WaitForLibvirt();
  void StopLibvirt(absl::Time deadline);

  const Options options_;
  ListenAddress listen_;
  std::optional<ListenAddress> health_listen_;
  std::optional<ListenAddress> metrics_listen_;
  int listen_lock_fd_ = -1;  // a unix socket's lock, held while we live
  std::string address_;
  int port_ = 0;
  std::shared_ptr<Availability> availability_ = std::make_shared<Availability>();
  std::shared_ptr<ReconnectSignal> reconnect_ = std::make_shared<ReconnectSignal>();
  std::shared_ptr<CallCounts> calls_ = std::make_shared<CallCounts>();
  std::shared_ptr<DomainReads> reads_ = std::make_shared<DomainReads>(calls_);
  std::unique_ptr<WorkerPool> workers_;
  // Shared with work in flight, which may outlive the Server (see
  // HypervisorService).
  std::shared_ptr<ConnectionPool> pool_;
  std::shared_ptr<EventHub> hub_;
  std::shared_ptr<DomainCache> cache_;
  std::shared_ptr<HostFacts> host_ = std::make_shared<HostFacts>();
  std::unique_ptr<LifecycleFeed> feed_;
  std::shared_ptr<BulkStatsReader> stats_;
  std::shared_ptr<DomainLister> lister_;
  std::unique_ptr<TimerThread> timers_;  // outlives the gRPC server's reactors
  std::unique_ptr<HypervisorService> service_;
  // grpc.health.v1; outlives the gRPC server (its reactors call back).
  std::unique_ptr<HealthService> health_service_ = std::make_unique<HealthService>();
  // TLS only: the checked copy of the files gRPC reads, and the policy
  // (gRPC's credentials share it); both outlive the gRPC server.
  std::unique_ptr<StagedTlsFiles> tls_files_;
  std::shared_ptr<Authorizer> authorizer_;
  // --health_listen: health alone, on a second gRPC server.
  std::unique_ptr<HealthListener> health_listener_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<HealthReporter> health_;
  // Every call's interceptor reports here; /metrics reads it.
  std::shared_ptr<RpcMetrics> rpc_metrics_ = std::make_shared<RpcMetrics>();
  // Last: stopped (in Shutdown, or destroyed) before the components it reads.
  std::unique_ptr<MetricsListener> metrics_listener_;
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

// True for "unix:..." and loopback hosts (127.0.0.0/8, [::1], localhost).
bool IsLoopbackOrUnix(const std::string& listen);

}  // namespace virtgate
