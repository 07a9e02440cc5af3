// HypervisorService: the virtgate.v1.Hypervisor gRPC service (callback API).
//
// A thin edge: validates each request once, on the gRPC thread (bad
// requests never queue); answers what needs no libvirt at once (CACHED
// reads, GetHostInfo, watches); hands FRESH reads to the WorkerPool
// (UnaryCall); converts statuses once, here. Open watches are counted per
// client and in total (WatchRegistry, --max_watches*).
//
// The work handed to a worker holds shared references to what it uses,
// never `this`: a worker abandoned in a stuck libvirt call at shutdown may
// return after the server is gone.
#pragma once

#include <memory>
#include <string>

#include "server/base/timer_thread.h"
#include "server/libvirt/bulk_stats_reader.h"
#include "server/libvirt/connection_pool.h"
#include "server/libvirt/host_info_reader.h"
#include "server/libvirt/lifecycle_feed.h"
#include "server/libvirt/worker_pool.h"
#include "server/reads/domain_lister.h"
#include "server/reads/domain_query.h"
#include "server/reads/page_token_key.h"
#include "server/rpc/rpc_metrics.h"
#include "server/rpc/unary_call.h"
#include "server/rpc/watch_reactor.h"
#include "server/rpc/watch_registry.h"
#include "server/state/domain_cache.h"
#include "server/state/event_hub.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {

// The generated CallbackService, but with WatchLifecycle raw (ByteBuffer in
// and out): each event is serialized once, in the EventHub, and every stream
// writes those bytes (WatchReactor). Only the handler's C++ signature
// differs: the method, its messages, reflection and clients are as declared
// in the proto.
using HypervisorServiceBase = v1::Hypervisor::WithCallbackMethod_ListDomains<
    v1::Hypervisor::WithCallbackMethod_GetDomain<v1::Hypervisor::WithCallbackMethod_GetHostInfo<
        v1::Hypervisor::WithRawCallbackMethod_WatchLifecycle<v1::Hypervisor::Service>>>>;

class HypervisorService final : public HypervisorServiceBase {
 public:
  // What the service reads from. `calls`, `feed` and `timers` must outlive
  // the gRPC server (only gRPC threads use them).
  struct Deps {
    PageLimits limits;
    // The key of this process's page tokens (decodes page_token).
    std::shared_ptr<const PageTokenKey> page_tokens;
    WatchLimits watch_limits;
    CallRunner calls;  // FRESH reads: workers, and the server's time limit
    std::shared_ptr<DomainLister> lister;
    std::shared_ptr<DomainCache> cache;
    std::shared_ptr<EventHub> hub;
    TimerThread* timers = nullptr;
    // For GetHostInfo:
    std::shared_ptr<ConnectionPool> pool;
    std::shared_ptr<BulkStatsReader> stats;
    std::shared_ptr<HostFacts> host;
    LifecycleFeed* feed = nullptr;
    // Watches report their calls here (RpcMetrics' interceptor skips them).
    std::shared_ptr<RpcMetrics> rpc_metrics;
  };

  explicit HypervisorService(Deps deps)
      : deps_(std::move(deps)), watches_(deps_.watch_limits) {}

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
  // `request` is a serialized v1::WatchLifecycleRequest; the stream carries
  // serialized v1::WatchLifecycleResponse messages.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* WatchLifecycle(
      grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) override;

 private:
  const Deps deps_;
  WatchRegistry watches_;
};

}  // namespace virtgate
