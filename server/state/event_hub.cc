#include "server/state/event_hub.h"

#include <algorithm>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "server/base/quote.h"
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

std::vector<EventHub::Message> EventHub::Subscriber::Drain(size_t max) {
  std::vector<Message> out;
  absl::MutexLock lock(&mu_);
  while (!queue_.empty() && out.size() < max) {
    out.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  // max: the outstanding LOST handed to a new watcher is older than its start.
  if (!out.empty()) last_taken_ = std::max(last_taken_, out.back()->sequence());
  return out;
}

std::vector<EventHub::Message> EventHub::Subscriber::DrainThrough(uint64_t sequence) {
  std::vector<Message> out;
  absl::MutexLock lock(&mu_);
  while (!queue_.empty() && queue_.front()->sequence() <= sequence) {
    out.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
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

// Returns whether the subscriber needs a wake queued (none pending yet).
bool EventHub::Subscriber::Offer(const Message& message, bool* overflowed_now) {
  if (!filter_.Matches(*message)) return false;
  absl::MutexLock lock(&mu_);
  if (overflowed_) return false;
  if (queue_.size() >= capacity_) {
    // Never wait for a slow watcher: drop it (it resumes from last_taken).
    overflowed_ = true;
    *overflowed_now = true;
  } else {
    queue_.push_back(message);
  }
  if (wake_pending_) return false;
  wake_pending_ = true;
  return true;
}

void EventHub::Subscriber::Wake() {
  {
    // Cleared before the callback: a message offered from now on queues a
    // new wake, so none is missed.
    absl::MutexLock lock(&mu_);
    wake_pending_ = false;
  }
  absl::MutexLock lock(&wake_mu_);
  if (wake_) wake_();
}

// --- EventHub

EventHub::EventHub(Options options, std::string epoch)
    : options_(options), epoch_(std::move(epoch)), notifier_([this] { NotifierLoop(); }) {}

EventHub::~EventHub() {
  {
    absl::MutexLock lock(&wake_mu_);
    stopping_ = true;
  }
  notifier_.join();
}

void EventHub::NotifierLoop() {
  for (;;) {
    std::deque<std::shared_ptr<Subscriber>> batch;
    {
      absl::MutexLock lock(&wake_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wake_mu_) {
        return stopping_ || !to_wake_.empty();
      };
      wake_mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      batch.swap(to_wake_);
    }
    for (const std::shared_ptr<Subscriber>& s : batch) s->Wake();
  }
}

std::string EventHub::NewEpoch() {
  absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen),
                         absl::Uniform<uint64_t>(gen));
}

void EventHub::Stamp(v1::WatchLifecycleResponse* message, uint64_t sequence) const {
  const int64_t nanos = absl::ToUnixNanos(absl::Now());
  message->set_sequence(sequence);
  message->set_epoch(epoch_);
  message->mutable_time()->set_seconds(nanos / 1000000000);
  message->mutable_time()->set_nanos(static_cast<int32_t>(nanos % 1000000000));
}

uint64_t EventHub::Publish(v1::WatchLifecycleResponse message) {
  std::vector<std::shared_ptr<Subscriber>> to_wake;
  uint64_t sequence;
  {
    absl::MutexLock lock(&mu_);
    sequence = next_sequence_++;
    Stamp(&message, sequence);
    // One immutable copy, serialized once, shared by the history and every queue.
    Message shared(std::move(message));
    if (shared->has_connection()) {
      outstanding_lost_ =
          shared->connection().state() == v1::ConnectionChange::STATE_LOST ? shared : nullptr;
    }
    for (const std::shared_ptr<Subscriber>& s : subscribers_) {
      bool overflowed = false;
      if (s->Offer(shared, &overflowed)) to_wake.push_back(s);
      if (overflowed) ++overflows_;
    }
    history_.push_back(std::move(shared));
    while (history_.size() > options_.history) history_.pop_front();
  }
  if (!to_wake.empty()) {
    absl::MutexLock lock(&wake_mu_);
    for (std::shared_ptr<Subscriber>& s : to_wake) to_wake_.push_back(std::move(s));
  }
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
          "resume_epoch ", Quote(resume_epoch), " is not this server's epoch (", epoch_,
          "): the server restarted; re-list with send_initial_state"));
    }
    if (*resume_after > last) {
      return absl::OutOfRangeError(absl::StrCat("resume_after_sequence ", *resume_after,
                                                " is ahead of the last sequence ", last));
    }
    // The history must hold every message after resume_after.
    const uint64_t oldest = history_.empty() ? last + 1 : history_.front()->sequence();
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
    for (const Message& m : history_) {
      if (m->sequence() > *resume_after && subscriber->filter_.Matches(*m)) {
        subscriber->queue_.push_back(m);
      }
    }
    subscriber->capacity_ += subscriber->queue_.size();
  } else if (outstanding_lost_) {
    // A watch opened during an outage learns of it first.
    absl::MutexLock sub_lock(&subscriber->mu_);
    subscriber->queue_.push_back(outstanding_lost_);
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

EventHub::WatchStats EventHub::GetWatchStats() const {
  absl::MutexLock lock(&mu_);
  WatchStats stats;
  stats.subscribers = subscribers_.size();
  stats.overflows = overflows_;
  for (const std::shared_ptr<Subscriber>& s : subscribers_) {
    absl::MutexLock queue_lock(&s->mu_);
    stats.max_queued = std::max(stats.max_queued, s->queue_.size());
  }
  return stats;
}

uint64_t EventHub::last_sequence() const {
  absl::MutexLock lock(&mu_);
  return next_sequence_ - 1;
}

}  // namespace virtgate
