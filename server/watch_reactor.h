// WatchReactor: one WatchLifecycle stream, fed by an EventHub subscription.
//
// In the manner of gRPC's health WatchReactor: one mutex guards the write
// state; at most one write is in flight; the stream is finished exactly once
// (by overflow, cancellation, a failed write, or server shutdown), and only
// when no write is in flight; OnDone unsubscribes, leaves the registry and
// deletes the reactor. The hub's wake callback (on libvirt's event thread)
// only starts a write if none is in flight.
//
// Ending statuses carry the last sequence the client received, in the
// message and in trailing metadata `virtgate-last-sequence`, so it can resume:
//   RESOURCE_EXHAUSTED  the watcher fell --watch_queue_depth messages behind;
//   UNAVAILABLE         the server is shutting down;
//   OUT_OF_RANGE        the resume point is gone (at start).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "server/event_hub.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

class WatchReactor;

// The open watches, so shutdown can end them. Thread-safe.
class WatchRegistry {
 public:
  void Add(WatchReactor* watch);
  void Remove(WatchReactor* watch);
  // Ends every open watch with UNAVAILABLE; later Add()s are ended at once.
  void EndAll();
  size_t size() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_set<WatchReactor*> watches_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

class WatchReactor final : public grpc::ServerWriteReactor<v1::WatchLifecycleResponse> {
 public:
  // Starts the stream (or finishes it at once for a bad request). Owned by
  // gRPC until OnDone.
  static WatchReactor* Start(grpc::CallbackServerContext* ctx,
                             const v1::WatchLifecycleRequest& request,
                             std::shared_ptr<EventHub> hub, WatchRegistry* registry);

  // Ends the stream with UNAVAILABLE ("server shutting down"). Any thread.
  void EndForShutdown();

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  WatchReactor(grpc::CallbackServerContext* ctx, std::shared_ptr<EventHub> hub,
               WatchRegistry* registry)
      : ctx_(ctx), hub_(std::move(hub)), registry_(registry) {}

  // Called by the hub when messages arrive or the queue overflows.
  void OnMessages();
  // Writes the next queued message, or finishes if one is due.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Finishes now if no write is in flight, else after it completes.
  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  grpc::Status WithLastSequence(grpc::StatusCode code, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  grpc::CallbackServerContext* const ctx_;
  const std::shared_ptr<EventHub> hub_;
  WatchRegistry* const registry_;
  std::shared_ptr<EventHub::Subscriber> subscriber_;  // set once, in Start

  absl::Mutex mu_;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> finish_after_write_ ABSL_GUARDED_BY(mu_);
  v1::WatchLifecycleResponse writing_ ABSL_GUARDED_BY(mu_);  // alive until OnWriteDone
  uint64_t last_sent_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace virtgate
