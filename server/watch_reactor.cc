#include "server/watch_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/domain_lister.h"

namespace virtgate {

// --- WatchRegistry

void WatchRegistry::Add(WatchReactor* watch) {
  bool end_now;
  {
    absl::MutexLock lock(&mu_);
    watches_.insert(watch);
    end_now = ended_;
  }
  if (end_now) watch->EndForShutdown();
}

void WatchRegistry::Remove(WatchReactor* watch) {
  absl::MutexLock lock(&mu_);
  watches_.erase(watch);
}

void WatchRegistry::EndAll() {
  // Under the lock: a watch cannot be deleted (OnDone removes it first)
  // while we end it.
  absl::MutexLock lock(&mu_);
  ended_ = true;
  for (WatchReactor* w : watches_) w->EndForShutdown();
}

size_t WatchRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return watches_.size();
}

// --- WatchReactor

namespace {

absl::StatusOr<WatchFilter> ParseFilter(const v1::WatchLifecycleRequest& request) {
  WatchFilter filter;
  for (const std::string& u : request.domain_uuids()) {
    absl::StatusOr<std::string> uuid = NormalizeUuid(u);
    if (!uuid.ok()) return uuid.status();
    filter.uuids.insert(*uuid);
  }
  filter.names.insert(request.domain_names().begin(), request.domain_names().end());
  for (int t : request.event_types()) {
    if (t == v1::LIFECYCLE_EVENT_TYPE_UNSPECIFIED || !v1::LifecycleEventType_IsValid(t)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "event_types: ", t, " is not an event type (use LIFECYCLE_EVENT_TYPE_STARTED, ...)"));
    }
    filter.types.insert(t);
  }
  return filter;
}

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace

WatchReactor* WatchReactor::Start(grpc::CallbackServerContext* ctx,
                                  const v1::WatchLifecycleRequest& request,
                                  std::shared_ptr<EventHub> hub, WatchRegistry* registry) {
  auto* watch = new WatchReactor(ctx, std::move(hub), registry);
  absl::Status refused;
  absl::StatusOr<WatchFilter> filter = ParseFilter(request);
  if (!filter.ok()) {
    refused = filter.status();
  } else if (request.send_initial_state()) {
    refused = absl::UnimplementedError(
        "send_initial_state is not implemented in this virtgated version yet");
  } else if (request.coalesce_ms() != 0) {
    refused = absl::UnimplementedError(
        "coalesce_ms is not implemented in this virtgated version yet");
  } else if (request.resume_after_sequence() == 0 && !request.resume_epoch().empty()) {
    refused = absl::InvalidArgumentError("resume_epoch needs resume_after_sequence");
  }
  if (refused.ok()) {
    std::optional<uint64_t> resume;
    if (request.resume_after_sequence() > 0 || !request.resume_epoch().empty()) {
      resume = request.resume_after_sequence();
    }
    absl::StatusOr<std::shared_ptr<EventHub::Subscriber>> sub = watch->hub_->Subscribe(
        *std::move(filter), resume, request.resume_epoch(), [watch] { watch->OnMessages(); });
    if (sub.ok()) {
      absl::MutexLock lock(&watch->mu_);
      watch->subscriber_ = *std::move(sub);
      watch->last_sent_ = resume.value_or(0);
    } else {
      refused = sub.status();
    }
  }
  if (!refused.ok()) {
    absl::MutexLock lock(&watch->mu_);
    watch->FinishLocked(ToGrpc(refused));
    return watch;
  }
  registry->Add(watch);
  // Replayed messages (on resume) are already queued.
  watch->OnMessages();
  return watch;
}

void WatchReactor::OnMessages() {
  absl::MutexLock lock(&mu_);
  PumpLocked();
}

void WatchReactor::PumpLocked() {
  if (finished_ || write_in_flight_ || !subscriber_) return;
  std::vector<v1::WatchLifecycleResponse> next = subscriber_->Drain(1);
  if (!next.empty()) {
    writing_ = std::move(next.front());
    write_in_flight_ = true;
    StartWrite(&writing_);
    return;
  }
  if (subscriber_->overflowed()) {
    FinishLocked(WithLastSequence(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        "watcher fell behind by more than --watch_queue_depth messages; resume after the "
        "last sequence"));
  }
}

void WatchReactor::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  write_in_flight_ = false;
  if (ok) last_sent_ = writing_.sequence();
  if (finish_after_write_.has_value()) {
    grpc::Status s = *std::move(finish_after_write_);
    finish_after_write_.reset();
    finished_ = false;
    FinishLocked(std::move(s));
    return;
  }
  if (!ok) {
    // The client is gone (or cancelled): the write side is over.
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "stream closed by the client"));
    return;
  }
  PumpLocked();
}

void WatchReactor::OnCancel() {
  absl::MutexLock lock(&mu_);
  FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled by the client"));
}

void WatchReactor::EndForShutdown() {
  absl::MutexLock lock(&mu_);
  FinishLocked(WithLastSequence(grpc::StatusCode::UNAVAILABLE,
                                "server shutting down; resume after the last sequence on the "
                                "next instance"));
}

grpc::Status WatchReactor::WithLastSequence(grpc::StatusCode code, const std::string& why) {
  return grpc::Status(code, absl::StrCat(why, " (last sequence ", last_sent_, ", epoch ",
                                         hub_->epoch(), ")"));
}

void WatchReactor::FinishLocked(grpc::Status status) {
  if (finished_) return;
  finished_ = true;  // no new writes from here on
  if (write_in_flight_) {
    finish_after_write_ = std::move(status);
    return;
  }
  ctx_->AddTrailingMetadata("virtgate-last-sequence", absl::StrCat(last_sent_));
  ctx_->AddTrailingMetadata("virtgate-epoch", hub_->epoch());
  Finish(std::move(status));
}

void WatchReactor::OnDone() {
  registry_->Remove(this);
  if (subscriber_) hub_->Unsubscribe(subscriber_);  // no wake after this returns
  delete this;
}

}  // namespace virtgate
