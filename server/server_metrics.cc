#include "server/server_metrics.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/metrics/code_label.h"

namespace virtgate {
namespace {

using T = Exposition::Type;

// DOMAIN_STATE_RUNNING -> "running"; LIFECYCLE_EVENT_TYPE_STARTED -> "started".
std::string EnumLabel(const std::string& name, absl::string_view prefix) {
  return absl::AsciiStrToLower(absl::StripPrefix(name, prefix));
}

// Made once: a scrape labels every domain with its state.
const std::string& StateLabel(v1::DomainState state) {
  static const auto* labels = [] {
    auto* l = new std::vector<std::string>();
    for (int s = 0; s <= v1::DomainState_MAX; ++s) {
      l->push_back(
          v1::DomainState_IsValid(s)
              ? EnumLabel(v1::DomainState_Name(static_cast<v1::DomainState>(s)), "DOMAIN_STATE_")
              : "unknown");
    }
    return l;
  }();
  const int s = static_cast<int>(state);
  return s >= 0 && s < static_cast<int>(labels->size()) ? (*labels)[s] : labels->front();
}

}  // namespace

std::string ServerMetrics::Scrape() const {
  Exposition out;
  out.Family("virtgate_build_info", "virtgated's version; always 1.", T::kGauge);
  out.Sample("virtgate_build_info", {{"version", VIRTGATE_VERSION}}, 1);
  deps_.rpc->Write(&out);
  WriteLibvirt(&out);
  WriteWorkers(&out);
  WriteEvents(&out);
  WriteDomains(&out);
  process_.Write(&out);
  return out.Take();
}

void ServerMetrics::WriteLibvirt(Exposition* out) const {
  const ConnectionPool::Snapshot pool = deps_.pool->GetSnapshot();
  out->Family("virtgate_libvirt_up",
              "1 while calls reach libvirt (a call connection is up): what the health service "
              "virtgate.v1.Hypervisor reports as SERVING.",
              T::kGauge);
  out->Sample("virtgate_libvirt_up", {{"uri", options_.libvirt_uri}},
              deps_.availability->Get().calls_up ? 1 : 0);
  out->Single("virtgate_libvirt_connections", "Call connections to libvirt (--pool_size).",
              T::kGauge, pool.connections_total);
  out->Single("virtgate_libvirt_connections_up", "Call connections to libvirt that are up.",
              T::kGauge, pool.connections_up);
  out->Single("virtgate_libvirt_connection_leases",
              "Calls holding a call connection now (at most pool_size x "
              "max_calls_per_connection).",
              T::kGauge, pool.in_flight);
  out->Family("virtgate_libvirt_reconnects_total",
              "libvirt connections opened again after one was lost (or, for calls, retired "
              "because a call was stuck on it): the call connections (calls) and the event "
              "connection (events).",
              T::kCounter);
  out->Sample("virtgate_libvirt_reconnects_total", {{"connection", "calls"}},
              static_cast<double>(pool.reconnects));
  out->Sample("virtgate_libvirt_reconnects_total", {{"connection", "events"}},
              static_cast<double>(deps_.feed->reconnects()));

  const std::map<std::string, CallCounts::Procedure> calls = deps_.calls->Procedures();
  out->Family("virtgate_libvirt_calls_total",
              "libvirt API calls made to read domains that returned, by procedure and outcome "
              "(grpc_code spelling: OK, NotFound, Unavailable...).",
              T::kCounter);
  for (const auto& [procedure, p] : calls) {
    for (const auto& [code, n] : p.ended) {
      out->Sample("virtgate_libvirt_calls_total",
                  {{"procedure", procedure}, {"code", CodeLabel(static_cast<int>(code))}},
                  static_cast<double>(n));
    }
  }
  out->Family("virtgate_libvirt_calls_in_flight",
              "libvirt API calls started and not returned yet, by procedure.", T::kGauge);
  for (const auto& [procedure, p] : calls) {
    out->Sample("virtgate_libvirt_calls_in_flight", {{"procedure", procedure}},
                static_cast<double>(p.in_flight()));
  }
  out->Family("virtgate_libvirt_call_duration_seconds",
              "Time libvirt API calls took to return, by procedure.", T::kHistogram);
  for (const auto& [procedure, p] : calls) {
    out->Histogram("virtgate_libvirt_call_duration_seconds", {{"procedure", procedure}},
                   LatencyHistogram::Bounds(), p.latency.counts(), p.latency.sum_seconds());
  }
}

void ServerMetrics::WriteWorkers(Exposition* out) const {
  const WorkerPool::Stats workers = deps_.workers->GetStats();
  out->Single("virtgate_libvirt_calls_stuck",
              "Calls running past their deadline inside libvirt (a stalled libvirtd): workers "
              "and bulk-stats reads.",
              T::kGauge, workers.stuck + deps_.stats->stuck_calls());
  out->Single("virtgate_libvirt_busy_domains",
              "Domains whose QEMU monitor is occupied, served from the cache until it answers.",
              T::kGauge, static_cast<double>(deps_.stats->busy().Busy().size()));
  out->Single("virtgate_workers", "Worker threads alive (replacements included).", T::kGauge,
              workers.threads);
  out->Single("virtgate_workers_busy", "Worker threads running a call.", T::kGauge, workers.busy);
  out->Single("virtgate_worker_replacements",
              "Extra worker threads standing in for ones stuck in libvirt now.", T::kGauge,
              workers.replacements);
  out->Single("virtgate_worker_replacements_started_total",
              "Extra worker threads started for stuck ones, ever.", T::kCounter,
              static_cast<double>(workers.replacements_started));
  out->Single("virtgate_worker_queue_depth", "Calls waiting for a free worker.", T::kGauge,
              workers.queued);
  out->Single("virtgate_worker_rejections_total",
              "Calls refused with RESOURCE_EXHAUSTED because --max_queued_calls were waiting.",
              T::kCounter, static_cast<double>(workers.rejected));
}

void ServerMetrics::WriteEvents(Exposition* out) const {
  const DomainCache::Stats cache = deps_.cache->GetStats();
  const EventHub::WatchStats watch = deps_.hub->GetWatchStats();
  out->Single("virtgate_events_up",
              "1 while lifecycle events flow from libvirt and the domain cache is in step.",
              T::kGauge, cache.current ? 1 : 0);
  out->Family("virtgate_libvirt_events_received_total",
              "Lifecycle events libvirt delivered, by type.", T::kCounter);
  for (int type = 1; type < static_cast<int>(cache.received.size()); ++type) {
    if (!v1::LifecycleEventType_IsValid(type)) continue;
    out->Sample(
        "virtgate_libvirt_events_received_total",
        {{"type", EnumLabel(v1::LifecycleEventType_Name(static_cast<v1::LifecycleEventType>(type)),
                            "LIFECYCLE_EVENT_TYPE_")}},
        static_cast<double>(cache.received[type]));
  }
  out->Single("virtgate_events_last_sequence",
              "Sequence number of the last message published to watchers (WatchLifecycle).",
              T::kGauge, static_cast<double>(cache.sequence));
  out->Single("virtgate_events_lost_total",
              "Outages of the event connection (each one a LOST message to watchers).", T::kCounter,
              static_cast<double>(cache.losses));
  out->Single("virtgate_domain_cache_resyncs_total",
              "Re-listings of every domain that brought the cache back in step (after an "
              "outage, or drift).",
              T::kCounter, static_cast<double>(cache.resyncs));
  out->Single("virtgate_domain_cache_drift_resyncs_total",
              "Re-listings because a read saw a state no event explained.", T::kCounter,
              static_cast<double>(cache.drift_resyncs));
  out->Single("virtgate_watch_streams", "Open WatchLifecycle streams.", T::kGauge,
              static_cast<double>(watch.subscribers));
  out->Single("virtgate_watch_queue_depth_max",
              "Messages queued for the slowest watcher now (--watch_queue_depth ends it).",
              T::kGauge, static_cast<double>(watch.max_queued));
  out->Single("virtgate_watchers_dropped_total",
              "Watch streams ended because their queue overflowed (the client resumes).",
              T::kCounter, static_cast<double>(watch.overflows));
}

void ServerMetrics::WriteDomains(Exposition* out) const {
  const DomainCache::View view = deps_.cache->Read(DomainCache::Query{});
  // Until libvirt was listed once nothing is known: no series rather than
  // zeros. While events are down (virtgate_events_up 0) these are the last
  // known states.
  if (!view.seeded) return;
  std::map<v1::DomainState, int> by_state;
  for (int s = v1::DOMAIN_STATE_NOSTATE; s <= v1::DOMAIN_STATE_PMSUSPENDED; ++s) {
    by_state[static_cast<v1::DomainState>(s)] = 0;
  }
  for (const DomainCache::Record& d : view.domains) ++by_state[d->state()];
  out->Family("virtgate_domains", "Domains by state, from the event-fed cache (no libvirt call).",
              T::kGauge);
  for (const auto& [state, n] : by_state) {
    out->Sample("virtgate_domains", {{"state", StateLabel(state)}}, n);
  }
  if (!options_.domain_series) return;
  out->Family("virtgate_domain_info",
              "One series per domain, always 1: its uuid, name, state and whether it is "
              "persistent. From the cache; state is that of the last event.",
              T::kGauge);
  // About 120 bytes a domain: grown once, not doubled along the way.
  out->Reserve(view.domains.size() * 160);
  for (const DomainCache::Record& d : view.domains) {
    const std::string& state = StateLabel(d->state());
    out->Sample("virtgate_domain_info",
                {{"uuid", d->uuid()},
                 {"name", d->name()},
                 {"state", state},
                 {"persistent", d->persistent() ? "true" : "false"}},
                1);
  }
}

}  // namespace virtgate
