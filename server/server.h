// Server: builds and owns everything virtgated runs — the libvirt connection
// pool, the worker pool, the gRPC server with the Hypervisor, health and
// reflection services — and tears it down in order.
//
// main.cc only turns flags into Options; tests build the same Server
// in-process (listen on 127.0.0.1:0 or a unix socket).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/connection_pool.h"
#include "server/domain_facts_cache.h"
#include "server/domain_lister.h"
#include "server/event_hub.h"
#include "server/timer_thread.h"
#include "server/hypervisor_service.h"
#include "server/lifecycle_mirror.h"
#include "server/worker_pool.h"

namespace virtgate {

class Server {
 public:
  struct Options {
    std::string libvirt_uri = "qemu:///system";
    // "host:port" (port 0 picks a free one) or "unix:/path".
    std::string listen = "127.0.0.1:50051";
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
    size_t watch_queue_depth = 1024;
    // TLS: both files set -> TLS; client CA set too -> clients must present a
    // certificate it signed (mTLS). Plaintext on a non-loopback address is
    // refused unless `insecure` is set.
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string tls_client_ca_file;
    bool insecure = false;
  };

  static absl::StatusOr<std::unique_ptr<Server>> BuildAndStart(Options options);
  ~Server();  // Shutdown(absl::ZeroDuration()) if not done yet

  // The address clients can dial: "127.0.0.1:41234" (port resolved) or
  // "unix:/path".
  const std::string& address() const { return address_; }
  int port() const { return port_; }

  // Stops accepting calls, reports NOT_SERVING, lets in-flight calls finish
  // for up to `grace`, then cancels the rest, abandons workers stuck in
  // libvirt, and closes the libvirt connections. Idempotent; thread-safe.
  void Shutdown(absl::Duration grace);

  // Blocks until the gRPC server has shut down.
  void Wait();

  ConnectionPool* connections() { return connections_.get(); }
  WorkerPool* workers() { return workers_.get(); }
  DomainFactsCache* facts() { return facts_.get(); }
  EventHub* events() { return hub_.get(); }
  LifecycleMirror* mirror() { return mirror_.get(); }
  HypervisorService* service() { return service_.get(); }

 private:
  Server() = default;

  Options options_;
  std::string address_;
  int port_ = 0;
  // Shared with work in flight, which may outlive the Server (see
  // HypervisorService).
  std::shared_ptr<ConnectionPool> connections_;
  std::unique_ptr<WorkerPool> workers_;
  std::shared_ptr<DomainFactsCache> facts_;
  std::shared_ptr<DomainLister> lister_;
  std::shared_ptr<EventHub> hub_;
  std::shared_ptr<LifecycleMirror> mirror_;
  std::shared_ptr<HostFacts> host_facts_;
  std::unique_ptr<TimerThread> timers_;  // outlives the gRPC server's reactors
  std::unique_ptr<HypervisorService> service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

// True for "unix:..." and loopback hosts (127.0.0.0/8, [::1], localhost).
bool IsLoopbackOrUnix(const std::string& listen);

}  // namespace virtgate
