#include "server/rpc/watch_reactor.h"

#include <grpcpp/impl/codegen/proto_utils.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/reads/domain_query.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/peer_key.h"

namespace virtgate {

namespace {

absl::StatusOr<v1::WatchLifecycleRequest> ParseRequest(const grpc::ByteBuffer& bytes) {
  grpc::ByteBuffer consumed(bytes);  // Deserialize takes its buffer; this one shares the slices
  v1::WatchLifecycleRequest request;
  if (!grpc::SerializationTraits<v1::WatchLifecycleRequest>::Deserialize(&consumed, &request)
           .ok()) {
    return absl::InvalidArgumentError(
        "the request does not parse as a virtgate.v1.WatchLifecycleRequest");
  }
  return request;
}

}  // namespace

WatchReactor* WatchReactor::Start(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer& request,
                                  const WatchDeps& deps, WatchRegistry* registry) {
  deps.metrics->Started(kWatchLifecycleMethod, "server_stream");  // Handled by EndNowLocked
  absl::StatusOr<v1::WatchLifecycleRequest> parsed = ParseRequest(request);
  if (parsed.ok()) return Open(ctx, *parsed, deps, registry);
  auto* watch = new WatchReactor(ctx, deps, registry, absl::ZeroDuration());
  absl::MutexLock lock(&watch->mu_);
  watch->FinishLocked(Ending::From(parsed.status()));
  return watch;
}

WatchReactor* WatchReactor::Open(grpc::CallbackServerContext* ctx,
                                 const v1::WatchLifecycleRequest& request, const WatchDeps& deps,
                                 WatchRegistry* registry) {
  auto* watch = new WatchReactor(
      ctx, deps, registry, absl::Milliseconds(std::min(request.coalesce_ms(), kMaxCoalesceMs)));
  absl::StatusOr<WatchFilter> filter = ParseWatchRequest(request);
  absl::Status refused = filter.status();
  // Admitted (within the limits) before it subscribes or takes a snapshot:
  // a refused watch costs nothing more. OnDone unregisters it.
  if (refused.ok()) refused = registry->Add(watch, PeerKey(ctx->peer()));
  if (refused.ok()) refused = watch->Subscribe(request, *std::move(filter), deps);
  if (!refused.ok()) {
    absl::MutexLock lock(&watch->mu_);
    watch->FinishLocked(Ending::From(refused));
    return watch;
  }
  watch->OnMessages();  // replayed or initial messages are ready now
  return watch;
}

absl::Status WatchReactor::Subscribe(const v1::WatchLifecycleRequest& request,
                                     WatchFilter filter, const WatchDeps& deps) {
  auto wake = [this] { OnMessages(); };
  if (request.send_initial_state()) {
    absl::StatusOr<DomainCache::Subscription> sub =
        deps.cache->SubscribeWithSnapshot(std::move(filter), wake);
    if (!sub.ok()) return sub.status();
    absl::MutexLock lock(&mu_);
    subscriber_ = std::move(sub->subscriber);
    if (!sub->snapshot.seeded) {
      return absl::UnavailableError(
          "hypervisor unavailable: libvirt has not been reached yet, so there is no domain "
          "state to send; retry");
    }
    // An outstanding LOST (events are not flowing) goes first, in order.
    for (EventHub::Message& m : subscriber_->DrainThrough(sub->snapshot.sequence)) {
      ready_.push_back(std::move(m));
    }
    last_sent_ = sub->snapshot.sequence;
    initial_.emplace(hub_.get(), std::move(sub->snapshot));
    return absl::OkStatus();
  }
  std::optional<uint64_t> resume;
  // An epoch with sequence 0 resumes from the start of that epoch.
  if (!request.resume_epoch().empty()) resume = request.resume_after_sequence();
  absl::StatusOr<std::shared_ptr<EventHub::Subscriber>> sub =
      hub_->Subscribe(std::move(filter), resume, request.resume_epoch(), wake);
  if (!sub.ok()) return sub.status();
  absl::MutexLock lock(&mu_);
  subscriber_ = *std::move(sub);
  last_sent_ = subscriber_->last_taken();
  return absl::OkStatus();
}

void WatchReactor::OnMessages() {
  absl::MutexLock lock(&mu_);
  PumpLocked();
}

void WatchReactor::WriteLocked(EventHub::Message m) {
  writing_ = std::move(m);  // holds the bytes until OnWriteDone
  write_in_flight_ = true;
  StartWrite(&writing_.wire());  // the bytes every stream shares
}

void WatchReactor::TakeFromSubscriptionLocked() {
  while (ready_.empty()) {
    std::vector<EventHub::Message> next = subscriber_->Drain(1);
    if (next.empty()) break;
    EventHub::Message& m = next.front();
    if (m->has_event() && coalescer_.enabled()) {
      if (coalescer_.Add(std::move(m))) {
        timers_->Schedule(coalescer_.closes_at(), [handle = handle_] {
          absl::MutexLock lock(&handle->mu);
          if (handle->watch != nullptr) handle->watch->OnMessages();
        });
      }
      continue;
    }
    if (coalescer_.open()) coalescer_.Close(&ready_);  // a connection change ends the window
    ready_.push_back(std::move(m));
  }
  if (coalescer_.open() && absl::Now() >= coalescer_.closes_at()) coalescer_.Close(&ready_);
}

void WatchReactor::PumpLocked() {
  if (finished_ || write_in_flight_ || !subscriber_) return;
  if (ready_.empty() && initial_.has_value()) {
    if (EventHub::Message m = initial_->Next()) {
      ready_.push_back(std::move(m));
    } else {
      initial_.reset();  // synced was sent: live events from here on
    }
  }
  if (ready_.empty() && !initial_.has_value()) TakeFromSubscriptionLocked();
  if (!ready_.empty()) {
    EventHub::Message m = std::move(ready_.front());
    ready_.pop_front();
    WriteLocked(std::move(m));
    return;
  }
  if (subscriber_->overflowed()) {
    FinishLocked({grpc::StatusCode::RESOURCE_EXHAUSTED,
                  "watcher fell behind by more than --watch_queue_depth messages; resume after "
                  "the last sequence",
                  /*with_position=*/true});
  }
}

void WatchReactor::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  write_in_flight_ = false;
  if (ok) last_sent_ = std::max(last_sent_, writing_->sequence());
  writing_.reset();
  if (ending_.has_value()) {
    EndNowLocked();  // the write FinishLocked waited for is done
    return;
  }
  if (!ok) {
    // The client is gone (or cancelled): the write side is over.
    FinishLocked({grpc::StatusCode::CANCELLED, "stream closed by the client"});
    return;
  }
  PumpLocked();
}

void WatchReactor::OnCancel() {
  absl::MutexLock lock(&mu_);
  FinishLocked({grpc::StatusCode::CANCELLED, "watch cancelled by the client"});
}

void WatchReactor::EndForShutdown() {
  absl::MutexLock lock(&mu_);
  // Not "resume on the next instance": that instance has a new epoch, so a
  // resume there can only end with OUT_OF_RANGE. The position stays in the
  // message and trailers for clients that log it.
  FinishLocked({grpc::StatusCode::UNAVAILABLE,
                "server shutting down: reconnect and start a new watch with "
                "send_initial_state (the next instance has a new epoch, so resuming "
                "this one's sequence ends with OUT_OF_RANGE)",
                /*with_position=*/true});
}

WatchReactor::Ending WatchReactor::Ending::From(const absl::Status& status) {
  const grpc::Status s = ToGrpcStatus(status);
  return {s.error_code(), s.error_message()};
}

void WatchReactor::FinishLocked(Ending ending) {
  if (finished_) return;
  finished_ = true;  // no new writes from here on
  ending_ = std::move(ending);
  if (!write_in_flight_) EndNowLocked();  // else OnWriteDone does
}

void WatchReactor::EndNowLocked() {
  // Composed now, after any last write completed, so the message and the
  // trailers name the same position.
  std::string message = ending_->why;
  if (ending_->with_position) {
    absl::StrAppend(&message, " (last sequence ", last_sent_, ", epoch ", hub_->epoch(), ")");
  }
  ctx_->AddTrailingMetadata("virtgate-last-sequence", absl::StrCat(last_sent_));
  ctx_->AddTrailingMetadata("virtgate-epoch", hub_->epoch());
  metrics_->Handled(kWatchLifecycleMethod, "server_stream", ending_->code, absl::ZeroDuration());
  Finish(grpc::Status(ending_->code, message));
}

void WatchReactor::OnDone() {
  {
    absl::MutexLock lock(&handle_->mu);  // waits for a timer's callback
    handle_->watch = nullptr;
  }
  registry_->Remove(this);
  std::shared_ptr<EventHub::Subscriber> subscriber;
  {
    absl::MutexLock lock(&mu_);
    subscriber = subscriber_;
  }
  if (subscriber) hub_->Unsubscribe(subscriber);  // no wake after this returns
  delete this;
}

}  // namespace virtgate
