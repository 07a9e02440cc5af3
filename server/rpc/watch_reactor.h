// WatchReactor: one WatchLifecycle stream, fed by an EventHub subscription.
// It talks to the hub and the domain cache only, never to libvirt.
//
// In the manner of gRPC's health WatchReactor: one mutex guards the write
// state; at most one write is in flight; the stream is finished exactly once
// (by overflow, cancellation, a failed write, or server shutdown), and only
// when no write is in flight; OnDone unsubscribes, leaves the registry and
// deletes the reactor. The hub's wake callback (on its notifier thread)
// only starts a write if none is in flight.
//
// Ending statuses carry the last sequence the client received, in the
// message and in trailing metadata `virtgate-last-sequence`, so it can resume:
//   RESOURCE_EXHAUSTED  the watcher fell --watch_queue_depth messages behind;
//                       or (at start) the client or the server already has
//                       as many watches open as allowed (WatchRegistry);
//   UNAVAILABLE         the server is shutting down, or (send_initial_state)
//                       libvirt has never been reached, so there is no state;
//   OUT_OF_RANGE        the resume point is gone (at start).
//
// A client that never reads costs the server its queue (at most
// --watch_queue_depth shared messages) and the one write in flight, which
// HTTP/2 flow control holds in gRPC's transport: nothing grows, and no
// thread waits on it.
//
// send_initial_state: the cache's snapshot and the subscription are taken
// together at one sequence S (DomainCache::SubscribeWithSnapshot), so the
// stream is: an outstanding LOST if events are down, one `initial` per
// matching domain, `synced`, then every event after S. Nothing to drop,
// nothing lost.
//
// Filters are the hub's (WatchFilter): applied once, there. Coalescing is
// the Coalescer's.
//
// Raw on the wire (HypervisorService registers the method so): the request
// arrives as bytes and is parsed here (garbage is INVALID_ARGUMENT), and
// each write is the HubMessage's shared serialized bytes, so a thousand
// streams do not serialize the same event a thousand times.
//
// It reports itself to RpcMetrics (started; handled with its code), in place
// of the metrics interceptor, which would double the per-message cost in
// gRPC's completion queue (see rpc_metrics.h).
#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/base/timer_thread.h"
#include "server/rpc/coalescer.h"
#include "server/rpc/rpc_metrics.h"
#include "server/rpc/watch_registry.h"
#include "server/state/domain_cache.h"
#include "server/state/event_hub.h"
#include "server/state/initial_states.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

// The method, as RpcMetrics counts it.
inline constexpr char kWatchLifecycleMethod[] = "/virtgate.v1.Hypervisor/WatchLifecycle";

// What a watch reads from, and reports to.
struct WatchDeps {
  std::shared_ptr<DomainCache> cache;  // send_initial_state
  std::shared_ptr<EventHub> hub;       // live and resumed watches
  TimerThread* timers = nullptr;       // closes coalescing windows
  std::shared_ptr<RpcMetrics> metrics;
};

class WatchReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // Starts the stream for a serialized v1::WatchLifecycleRequest (or
  // finishes it at once for a bad one). Owned by gRPC until OnDone.
  static WatchReactor* Start(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer& request,
                             const WatchDeps& deps, WatchRegistry* registry);

  // Ends the stream with UNAVAILABLE ("server shutting down"). Any thread.
  void EndForShutdown();

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // Lets a timer reach the reactor only while it exists.
  struct Handle {
    absl::Mutex mu;
    WatchReactor* watch ABSL_GUARDED_BY(mu);
  };

  WatchReactor(grpc::CallbackServerContext* ctx, const WatchDeps& deps, WatchRegistry* registry,
               absl::Duration coalesce)
      : ctx_(ctx),
        hub_(deps.hub),
        metrics_(deps.metrics),
        registry_(registry),
        timers_(deps.timers),
        handle_(std::make_shared<Handle>()),
        coalescer_(coalesce) {
    absl::MutexLock lock(&handle_->mu);
    handle_->watch = this;
  }

  // Start, for a request that parsed.
  static WatchReactor* Open(grpc::CallbackServerContext* ctx,
                            const v1::WatchLifecycleRequest& request, const WatchDeps& deps,
                            WatchRegistry* registry);
  // Subscribes as the request asks; the reason if it cannot.
  absl::Status Subscribe(const v1::WatchLifecycleRequest& request, WatchFilter filter,
                         const WatchDeps& deps);
  // Called by the hub when messages arrive or the queue overflows.
  void OnMessages();

  // How the stream ends; with_position appends the last sequence and epoch
  // to the message (they are always in the trailers).
  struct Ending {
    grpc::StatusCode code;
    std::string why;
    bool with_position = false;
    static Ending From(const absl::Status& status);
  };

  // Writes the next message, or finishes if one is due.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves what is next from the subscription to ready_.
  void TakeFromSubscriptionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteLocked(EventHub::Message m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Finishes now if no write is in flight, else after it completes.
  void FinishLocked(Ending ending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds the trailers and calls Finish with ending_.
  void EndNowLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  grpc::CallbackServerContext* const ctx_;
  const std::shared_ptr<EventHub> hub_;
  const std::shared_ptr<RpcMetrics> metrics_;
  WatchRegistry* const registry_;
  TimerThread* const timers_;
  const std::shared_ptr<Handle> handle_;

  absl::Mutex mu_;
  std::shared_ptr<EventHub::Subscriber> subscriber_ ABSL_GUARDED_BY(mu_);
  // send_initial_state: what opens the stream, until handed out.
  std::optional<InitialStates> initial_ ABSL_GUARDED_BY(mu_);
  Coalescer coalescer_ ABSL_GUARDED_BY(mu_);
  // What is to be written next, in order.
  std::deque<EventHub::Message> ready_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<Ending> ending_ ABSL_GUARDED_BY(mu_);  // set once, by FinishLocked
  EventHub::Message writing_ ABSL_GUARDED_BY(mu_);  // kept alive until OnWriteDone
  uint64_t last_sent_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace virtgate
