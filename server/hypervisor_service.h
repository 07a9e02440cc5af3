// HypervisorService: the virtgate.v1.Hypervisor gRPC service (callback API).
//
// A thin edge: validates what needs no libvirt on the gRPC thread, hands the
// rest to the WorkerPool (UnaryCall), and converts statuses once, here.
//
// The work handed to a worker holds shared references to the connection pool
// and the lister, never `this`: a worker abandoned in a stuck libvirt call at
// shutdown may return after the server is gone.
#pragma once

#include <memory>
#include <string>

#include "server/connection_pool.h"
#include "server/domain_lister.h"
#include "server/event_hub.h"
#include "server/host_info_reader.h"
#include "server/lifecycle_mirror.h"
#include "server/watch_reactor.h"
#include "server/worker_pool.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {

class HypervisorService final : public v1::Hypervisor::CallbackService {
 public:
  // `workers` must outlive the gRPC server (only gRPC threads submit to it).
  HypervisorService(WorkerPool* workers, std::shared_ptr<ConnectionPool> connections,
                    std::shared_ptr<DomainLister> lister, std::shared_ptr<EventHub> hub,
                    std::shared_ptr<LifecycleMirror> mirror,
                    std::shared_ptr<HostFacts> host_facts, TimerThread* timers)
      : workers_(workers),
        connections_(std::move(connections)),
        lister_(std::move(lister)),
        hub_(std::move(hub)),
        mirror_(std::move(mirror)),
        host_facts_(std::move(host_facts)),
        timers_(timers) {}

  // Ends every open WatchLifecycle stream with UNAVAILABLE (server shutdown).
  void EndWatches() { watches_.EndAll(); }
  size_t open_watches() const { return watches_.size(); }

  grpc::ServerUnaryReactor* ListDomains(grpc::CallbackServerContext* ctx,
                                        const v1::ListDomainsRequest* request,
                                        v1::ListDomainsResponse* response) override;
  grpc::ServerUnaryReactor* GetDomain(grpc::CallbackServerContext* ctx,
                                      const v1::GetDomainRequest* request,
                                      v1::Domain* response) override;
  grpc::ServerUnaryReactor* GetHostInfo(grpc::CallbackServerContext* ctx,
                                        const v1::GetHostInfoRequest* request,
                                        v1::HostInfo* response) override;
  grpc::ServerWriteReactor<v1::WatchLifecycleResponse>* WatchLifecycle(
      grpc::CallbackServerContext* ctx, const v1::WatchLifecycleRequest* request) override;

 private:
  WorkerPool* const workers_;
  const std::shared_ptr<ConnectionPool> connections_;
  const std::shared_ptr<DomainLister> lister_;
  const std::shared_ptr<EventHub> hub_;
  const std::shared_ptr<LifecycleMirror> mirror_;
  const std::shared_ptr<HostFacts> host_facts_;
  TimerThread* const timers_;
  WatchRegistry watches_;
};

}  // namespace virtgate
