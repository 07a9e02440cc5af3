#include "server/watch_reactor.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/domain_lister.h"
#include "server/grpc_status.h"

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

// How long after `synced` an event may still be one the snapshot reflected.
// libvirt delivers events within milliseconds; this is generous.
constexpr absl::Duration kInitialViewWindow = absl::Seconds(5);
// A send_initial_state listing taking longer than this counts as stuck.
constexpr absl::Duration kInitialListingDeadline = absl::Seconds(60);

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

}  // namespace

WatchReactor* WatchReactor::Start(grpc::CallbackServerContext* ctx,
                                  const v1::WatchLifecycleRequest& request, const WatchDeps& deps,
                                  WatchRegistry* registry) {
  auto* watch = new WatchReactor(ctx, deps.hub, registry);
  absl::Status refused;
  absl::StatusOr<WatchFilter> filter = ParseFilter(request);
  const bool initial = request.send_initial_state();
  WatchFilter domains_only;
  if (!filter.ok()) {
    refused = filter.status();
  } else if (initial && (request.resume_after_sequence() > 0 || !request.resume_epoch().empty())) {
    refused = absl::InvalidArgumentError(
        "send_initial_state and resume_after_sequence exclude each other: resume, or re-list");
  } else if (request.coalesce_ms() > 60000) {
    refused = absl::InvalidArgumentError(
        absl::StrCat("coalesce_ms must be at most 60000, got ", request.coalesce_ms()));
  } else if (request.resume_after_sequence() > 0 && request.resume_epoch().empty()) {
    refused = absl::InvalidArgumentError("resume_after_sequence needs resume_epoch");
  }
  watch->coalesce_ = absl::Milliseconds(request.coalesce_ms());
  watch->timers_ = deps.timers;
  if (refused.ok() && initial) {
    // The view must see every event of its domains; types are filtered here.
    watch->local_types_ = std::move(filter->types);
    filter->types.clear();
    domains_only = *filter;
  }
  if (refused.ok()) {
    std::optional<uint64_t> resume;
    // An epoch with sequence 0 resumes from the start of that epoch.
    if (!request.resume_epoch().empty()) resume = request.resume_after_sequence();
    absl::StatusOr<std::shared_ptr<EventHub::Subscriber>> sub = watch->hub_->Subscribe(
        *std::move(filter), resume, request.resume_epoch(), [watch] { watch->OnMessages(); });
    if (sub.ok()) {
      absl::MutexLock lock(&watch->mu_);
      watch->subscriber_ = *std::move(sub);
      watch->last_sent_ = watch->subscriber_->last_taken();
      watch->listing_ = initial;
    } else {
      refused = sub.status();
    }
  }
  if (!refused.ok()) {
    absl::MutexLock lock(&watch->mu_);
    watch->FinishLocked(Ending::From(refused));
    return watch;
  }
  registry->Add(watch);
  if (initial) {
    watch->StartInitialListing(deps, domains_only);  // subscribed first, then list
  } else {
    watch->OnMessages();  // replayed messages (on resume) are already queued
  }
  return watch;
}

void WatchReactor::StartInitialListing(const WatchDeps& deps, const WatchFilter& domains_only) {
  const absl::Time deadline = absl::Now() + kInitialListingDeadline;
  absl::Status queued = deps.workers->Submit(
      [handle = handle_, pool = deps.connections, lister = deps.lister,
       filter = domains_only, deadline](bool cancelled) {
        absl::StatusOr<std::vector<v1::Domain>> result;
        if (cancelled) {
          result = absl::UnavailableError("server shutting down");
        } else if (absl::StatusOr<ConnectionPool::Lease> lease =
                       pool->Acquire(deadline);
                   !lease.ok()) {
          result = lease.status();
        } else {
          result = lister->ListEverything(lease->get(), deadline);
          if (result.ok()) {
            std::vector<v1::Domain> matching;
            for (v1::Domain& d : *result) {
              v1::WatchLifecycleResponse probe;
              probe.mutable_event()->set_domain_uuid(d.uuid());
              probe.mutable_event()->set_domain_name(d.name());
              if (filter.Matches(probe)) matching.push_back(std::move(d));
            }
            result = std::move(matching);
          }
        }
        absl::MutexLock lock(&handle->mu);
        if (handle->watch != nullptr) handle->watch->OnInitialListing(std::move(result));
      },
      deadline);
  if (!queued.ok()) {
    absl::MutexLock lock(&mu_);
    FinishLocked(Ending::From(queued));
    return;
  }
  // A listing stuck in a stalled libvirt cannot be cancelled; the watch
  // ends at the listing's deadline instead of waiting for it.
  deps.timers->Schedule(deadline, [handle = handle_] {
    absl::MutexLock lock(&handle->mu);
    if (handle->watch != nullptr) handle->watch->OnInitialListingDeadline();
  });
}

void WatchReactor::OnInitialListingDeadline() {
  absl::MutexLock lock(&mu_);
  if (finished_ || !listing_) return;
  FinishLocked({grpc::StatusCode::UNAVAILABLE,
                absl::StrCat("libvirt did not answer the initial listing within ",
                             absl::FormatDuration(kInitialListingDeadline), "; retry")});
}

void WatchReactor::OnInitialListing(absl::StatusOr<std::vector<v1::Domain>> listed) {
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  if (!listed.ok()) {
    FinishLocked(Ending::From(listed.status()));
    return;
  }
  // Events up to the subscription point are certainly reflected.
  const uint64_t reflected = last_sent_;
  // An outstanding LOST (events are not flowing) goes first, in order.
  for (EventHub::Message& m : subscriber_->DrainThrough(reflected)) {
    ready_.push_back(std::move(m));
  }
  view_.emplace();  // a DomainView of what this watch was shown
  // Nothing was drained while listing, so ready_ is empty: these go first.
  for (v1::Domain& d : *listed) {
    view_->Add(d);
    v1::WatchLifecycleResponse m;
    hub_->Stamp(&m, reflected);
    *m.mutable_initial()->mutable_domain() = std::move(d);
    ready_.push_back(std::make_shared<const v1::WatchLifecycleResponse>(std::move(m)));
  }
  v1::WatchLifecycleResponse synced;
  hub_->Stamp(&synced, reflected);
  synced.mutable_synced();
  ready_.push_back(std::make_shared<const v1::WatchLifecycleResponse>(std::move(synced)));
  view_until_ = absl::Now() + kInitialViewWindow;
  listing_ = false;
  PumpLocked();
}

void WatchReactor::OnMessages() {
  absl::MutexLock lock(&mu_);
  PumpLocked();
}

void WatchReactor::WriteLocked(EventHub::Message m) {
  writing_ = std::move(m);
  write_in_flight_ = true;
  StartWrite(writing_.get());
}

void WatchReactor::CloseWindowLocked() {
  std::vector<EventHub::Message> batch;
  batch.reserve(window_.size());
  for (auto& [uuid, m] : window_) batch.push_back(std::move(m));
  window_.clear();
  std::sort(batch.begin(), batch.end(),
            [](const EventHub::Message& a, const EventHub::Message& b) {
              return a->sequence() < b->sequence();
            });
  for (EventHub::Message& m : batch) ready_.push_back(std::move(m));
}

void WatchReactor::PumpLocked() {
  if (finished_ || write_in_flight_ || !subscriber_ || listing_) return;
  while (ready_.empty()) {
    std::vector<EventHub::Message> next = subscriber_->Drain(1);
    if (next.empty()) break;
    const v1::WatchLifecycleResponse& m = *next.front();
    if (m.has_event()) {
      if (view_.has_value() && absl::Now() > view_until_) view_.reset();
      const bool already_shown = view_.has_value() && !view_->IsNew(m.event());
      const bool unwanted = !local_types_.empty() && !local_types_.contains(m.event().type());
      if (already_shown || unwanted) {
        // With nothing held back, the client has everything up to here.
        if (window_.empty()) last_sent_ = m.sequence();
        continue;
      }
      if (coalesce_ > absl::ZeroDuration()) {
        if (window_.empty()) {
          window_closes_ = absl::Now() + coalesce_;
          timers_->Schedule(window_closes_, [handle = handle_] {
            absl::MutexLock lock(&handle->mu);
            if (handle->watch != nullptr) handle->watch->OnMessages();
          });
        }
        window_[m.event().domain_uuid()] = std::move(next.front());  // the last one wins
        continue;
      }
    } else if (!window_.empty()) {
      CloseWindowLocked();  // a connection change ends the window
    }
    ready_.push_back(std::move(next.front()));
  }
  if (!window_.empty() && absl::Now() >= window_closes_) CloseWindowLocked();
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
  FinishLocked({grpc::StatusCode::UNAVAILABLE,
                "server shutting down; resume after the last sequence on the next instance",
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
  Finish(grpc::Status(ending_->code, message));
}

void WatchReactor::OnDone() {
  {
    absl::MutexLock lock(&handle_->mu);  // waits for a listing worker's callback
    handle_->watch = nullptr;
  }
  registry_->Remove(this);
  if (subscriber_) hub_->Unsubscribe(subscriber_);  // no wake after this returns
  delete this;
}

}  // namespace virtgate
