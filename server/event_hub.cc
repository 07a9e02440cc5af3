#include "server/event_hub.h"

#include <algorithm>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "google/protobuf/timestamp.pb.h"

namespace virtgate {

bool WatchFilter::Matches(const v1::WatchLifecycleResponse& message) const {
  if (!message.has_event()) return true;  // connection changes reach everyone
  const v1::LifecycleEvent& e = message.event();
  if (!types.empty() && !types.contains(e.type())) return false;
  if (uuids.empty() && names.empty()) return true;
  return uuids.contains(e.domain_uuid()) || names.contains(e.domain_name());
}

// --- Subscriber

std::vector<v1::WatchLifecycleResponse> EventHub::Subscriber::Drain(size_t max) {
  std::vector<v1::WatchLifecycleResponse> out;
  absl::MutexLock lock(&mu_);
  while (!queue_.empty() && out.size() < max) {
    out.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  if (!out.empty()) last_taken_ = out.back().sequence();
  return out;
}

bool EventHub::Subscriber::overflowed() const {
  absl::MutexLock lock(&mu_);
  return overflowed_;
}

uint64_t EventHub::Subscriber::last_taken() const {
  absl::MutexLock lock(&mu_);
  return last_taken_;
}

bool EventHub::Subscriber::Offer(const v1::WatchLifecycleResponse& message) {
  if (!filter_.Matches(message)) return false;
  absl::MutexLock lock(&mu_);
  if (overflowed_) return false;
  if (queue_.size() >= capacity_) {
    // Never wait for a slow watcher: drop it (it resumes from last_taken).
    overflowed_ = true;
    return true;  // wake it so its stream can end
  }
  queue_.push_back(message);
  return true;
}

void EventHub::Subscriber::Wake() {
  absl::MutexLock lock(&wake_mu_);
  if (wake_) wake_();
}

// --- EventHub

EventHub::EventHub(Options options, std::string epoch)
    : options_(options), epoch_(std::move(epoch)) {}

std::string EventHub::NewEpoch() {
  absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen),
                         absl::Uniform<uint64_t>(gen));
}

uint64_t EventHub::Publish(v1::WatchLifecycleResponse message) {
  const absl::Time now = absl::Now();
  message.set_epoch(epoch_);
  const int64_t nanos = absl::ToUnixNanos(now);
  message.mutable_time()->set_seconds(nanos / 1000000000);
  message.mutable_time()->set_nanos(static_cast<int32_t>(nanos % 1000000000));
  std::vector<std::shared_ptr<Subscriber>> to_wake;
  uint64_t sequence;
  {
    absl::MutexLock lock(&mu_);
    sequence = next_sequence_++;
    message.set_sequence(sequence);
    for (const std::shared_ptr<Subscriber>& s : subscribers_) {
      if (s->Offer(message)) to_wake.push_back(s);
    }
    history_.push_back(std::move(message));
    while (history_.size() > options_.history) history_.pop_front();
  }
  for (const std::shared_ptr<Subscriber>& s : to_wake) s->Wake();
  return sequence;
}

absl::StatusOr<std::shared_ptr<EventHub::Subscriber>> EventHub::Subscribe(
    WatchFilter filter, std::optional<uint64_t> resume_after, absl::string_view resume_epoch,
    std::function<void()> wake) {
  absl::MutexLock lock(&mu_);
  const uint64_t last = next_sequence_ - 1;
  if (resume_after.has_value()) {
    if (resume_epoch != epoch_) {
      return absl::OutOfRangeError(absl::StrCat(
          "resume_epoch \"", resume_epoch, "\" is not this server's epoch (", epoch_,
          "): the server restarted; re-list with send_initial_state"));
    }
    if (*resume_after > last) {
      return absl::OutOfRangeError(absl::StrCat("resume_after_sequence ", *resume_after,
                                                " is ahead of the last sequence ", last));
    }
    // The history must hold every message after resume_after.
    const uint64_t oldest = history_.empty() ? last + 1 : history_.front().sequence();
    if (*resume_after + 1 < oldest) {
      return absl::OutOfRangeError(absl::StrCat(
          "resume_after_sequence ", *resume_after, " is older than the history (oldest kept: ",
          oldest, "); re-list with send_initial_state"));
    }
  }
  const uint64_t start = resume_after.value_or(last);
  auto subscriber = std::shared_ptr<Subscriber>(
      new Subscriber(std::move(filter), options_.queue_depth, std::move(wake), start));
  if (resume_after.has_value()) {
    absl::MutexLock sub_lock(&subscriber->mu_);
    for (const v1::WatchLifecycleResponse& m : history_) {
      if (m.sequence() > *resume_after && subscriber->filter_.Matches(m)) {
        subscriber->queue_.push_back(m);
      }
    }
    subscriber->capacity_ += subscriber->queue_.size();
  }
  subscribers_.push_back(subscriber);
  return subscriber;
}

void EventHub::Unsubscribe(const std::shared_ptr<Subscriber>& subscriber) {
  {
    absl::MutexLock lock(&mu_);
    subscribers_.erase(std::remove(subscribers_.begin(), subscribers_.end(), subscriber),
                       subscribers_.end());
  }
  // Waits for a wake in progress; none starts afterwards.
  absl::MutexLock lock(&subscriber->wake_mu_);
  subscriber->wake_ = nullptr;
}

size_t EventHub::subscriber_count() const {
  absl::MutexLock lock(&mu_);
  return subscribers_.size();
}

uint64_t EventHub::last_sequence() const {
  absl::MutexLock lock(&mu_);
  return next_sequence_ - 1;
}

}  // namespace virtgate
