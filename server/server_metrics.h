// ServerMetrics: everything /metrics says, gathered at each scrape from the
// components' own counters (README "Monitoring" lists every metric):
//   gRPC calls (RpcMetrics, fed by its interceptor), libvirt calls
//   (CallCounts), connections and reconnects (ConnectionPool,
//   LifecycleFeed), workers (WorkerPool), stuck calls and busy domains
//   (BulkStatsReader), events and watchers (DomainCache, EventHub), domains
//   by state and one series per domain (DomainCache), the process
//   (ProcessMetrics) and the build.
//
// A scrape makes no libvirt call and takes only the components' short
// locks, none of which is held across a libvirt call: it answers at once
// while libvirtd is stalled. Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "server/libvirt/bulk_stats_reader.h"
#include "server/libvirt/call_counts.h"
#include "server/libvirt/connection_pool.h"
#include "server/libvirt/lifecycle_feed.h"
#include "server/libvirt/worker_pool.h"
#include "server/metrics/metrics_listener.h"
#include "server/metrics/process_metrics.h"
#include "server/rpc/rpc_metrics.h"
#include "server/state/availability.h"
#include "server/state/domain_cache.h"
#include "server/state/event_hub.h"

namespace virtgate {

class ServerMetrics : public MetricsSource {
 public:
  struct Deps {
    std::shared_ptr<const RpcMetrics> rpc;
    std::shared_ptr<const CallCounts> calls;
    std::shared_ptr<const ConnectionPool> pool;
    const LifecycleFeed* feed;  // the Server's; outlives the metrics listener
    const WorkerPool* workers;  // likewise
    std::shared_ptr<const BulkStatsReader> stats;
    std::shared_ptr<const DomainCache> cache;
    std::shared_ptr<const EventHub> hub;
    // What health follows: virtgate_libvirt_up says the same.
    std::shared_ptr<const Availability> availability;
  };
  struct Options {
    // One virtgate_domain_info series per domain (--metrics_domain_series);
    // off on hosts with so many domains that the series cost too much.
    bool domain_series = true;
    std::string libvirt_uri;
  };

  ServerMetrics(Options options, Deps deps) : options_(std::move(options)), deps_(std::move(deps)) {}

  // The exposition text (Exposition::kContentType).
  std::string Scrape() const override;

 private:
  void WriteLibvirt(Exposition* out) const;
  void WriteWorkers(Exposition* out) const;
  void WriteEvents(Exposition* out) const;
  void WriteDomains(Exposition* out) const;

  const Options options_;
  const Deps deps_;
  const ProcessMetrics process_;
};

}  // namespace virtgate
