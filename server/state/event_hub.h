// EventHub: the server's one fan-out point for lifecycle events.
//
// Publish() stamps each message with a sequence number (strictly increasing
// and gap-free within this hub's epoch), the epoch (a random id fixed for the
// server's lifetime) and a timestamp; keeps the last `history` messages for
// resuming watchers; and offers the message to every subscriber's bounded
// queue. It never waits for a subscriber: one whose queue is full is marked
// overflowed and gets nothing more (its stream ends with RESOURCE_EXHAUSTED
// and the last sequence it took, so it can resume), while every other
// subscriber and the publisher go on undelayed.
//
// Each message is one immutable HubMessage, serialized once at Publish,
// shared by the history and every queue: the streams write its bytes.
//
// Threads: Publish() runs on libvirt's event loop thread (and the reconnect
// path) and does only cheap work there: it stamps the message once, shares
// the same immutable copy with every queue, and hands the wake-ups to the
// hub's own notifier thread, so even a thousand watchers do not delay
// libvirt's event loop. Subscribe/Unsubscribe/Drain run on gRPC or worker
// threads. The wake callback runs on the notifier thread, outside the hub's
// and the queue's locks; it must only signal (e.g. start a write if none is
// in flight). Wakes are coalesced: one wake may stand for several messages,
// so a woken reader drains until the queue is empty. After Unsubscribe()
// returns, the callback is never called.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/state/hub_message.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

// Which messages a watcher wants. Connection changes always pass.
struct WatchFilter {
  absl::flat_hash_set<std::string> uuids;
  absl::flat_hash_set<std::string> names;
  absl::flat_hash_set<int> types;  // v1::LifecycleEventType values

  // Empty sets match everything; a domain matching uuids or names passes.
  bool Matches(const v1::WatchLifecycleResponse& message) const;
};

class EventHub {
 public:
  using Message = HubMessage;

  struct Options {
    size_t history = 10000;       // --event_history
    size_t queue_depth = 1024;    // --watch_queue_depth
  };

  class Subscriber {
   public:
    // Moves out up to `max` queued messages, oldest first.
    std::vector<Message> Drain(size_t max);
    // Moves out the queued messages with sequence <= `sequence` at the head
    // of the queue (the outstanding LOST a new watcher starts with).
    std::vector<Message> DrainThrough(uint64_t sequence);
    // True once a message was dropped because the queue was full. What is
    // still queued may be drained; nothing more arrives.
    bool overflowed() const;
    // The last sequence Drain handed out (or the resume point / the hub's
    // sequence at subscription when nothing was drained yet).
    uint64_t last_taken() const;

   private:
    friend class EventHub;
    Subscriber(WatchFilter filter, size_t depth, std::function<void()> wake, uint64_t start)
        : filter_(std::move(filter)), capacity_(depth), last_taken_(start), wake_(std::move(wake)) {}
    // Returns true if the subscriber should be woken; sets *overflowed_now
    // when this message overflowed its queue.
    bool Offer(const Message& message, bool* overflowed_now);
    void Wake();

    const WatchFilter filter_;
    mutable absl::Mutex mu_;
    // --watch_queue_depth, plus the replay of a resume (which the watcher did
    // not fall behind on live).
    size_t capacity_ ABSL_GUARDED_BY(mu_);
    std::deque<Message> queue_ ABSL_GUARDED_BY(mu_);
    bool overflowed_ ABSL_GUARDED_BY(mu_) = false;
    bool wake_pending_ ABSL_GUARDED_BY(mu_) = false;  // queued for the notifier
    uint64_t last_taken_ ABSL_GUARDED_BY(mu_);
    // Separate from mu_: the callback may take the watcher's own lock, which
    // is held while draining (so mu_ -> watcher lock would invert).
    absl::Mutex wake_mu_;
    std::function<void()> wake_ ABSL_GUARDED_BY(wake_mu_);
  };

  explicit EventHub(Options options, std::string epoch = NewEpoch());
  ~EventHub();  // stops the notifier thread
  EventHub(const EventHub&) = delete;
  EventHub& operator=(const EventHub&) = delete;

  // 128 random bits, hex.
  static std::string NewEpoch();

  const std::string& epoch() const { return epoch_; }

  // Sets `message`'s sequence, this hub's epoch, and the current time.
  void Stamp(v1::WatchLifecycleResponse* message, uint64_t sequence) const;

  // Stamps `message` (sequence, epoch, time), records and fans it out.
  // Returns the sequence it got.
  uint64_t Publish(v1::WatchLifecycleResponse message);

  // Registers a subscriber that receives every matching message published
  // after this call (first, without resume, the outstanding connection LOST
  // if the connection is down now). With `resume_after`, it first receives the matching
  // recorded messages with a greater sequence; OUT_OF_RANGE (saying why) if
  // `resume_epoch` is not this hub's epoch, or the history no longer reaches
  // back that far, or the sequence is in the future. `wake` is called when
  // messages arrive or the queue overflows.
  absl::StatusOr<std::shared_ptr<Subscriber>> Subscribe(WatchFilter filter,
                                                        std::optional<uint64_t> resume_after,
                                                        absl::string_view resume_epoch,
                                                        std::function<void()> wake);
  void Unsubscribe(const std::shared_ptr<Subscriber>& subscriber);

  size_t subscriber_count() const;
  uint64_t last_sequence() const;

  struct WatchStats {
    size_t subscribers = 0;
    size_t max_queued = 0;   // the longest subscriber queue now
    uint64_t overflows = 0;  // subscribers dropped because their queue was full, ever
  };
  WatchStats GetWatchStats() const;

 private:
  void NotifierLoop();

  const Options options_;
  const std::string epoch_;
  mutable absl::Mutex mu_;
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  std::deque<Message> history_ ABSL_GUARDED_BY(mu_);
  // The last connection change if it was LOST (no RESTORED since).
  Message outstanding_lost_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Subscriber>> subscribers_ ABSL_GUARDED_BY(mu_);
  uint64_t overflows_ ABSL_GUARDED_BY(mu_) = 0;

  // Subscribers to wake, for the notifier thread. Bounded by the number of
  // subscribers (each is queued at most once at a time).
  absl::Mutex wake_mu_;
  std::deque<std::shared_ptr<Subscriber>> to_wake_ ABSL_GUARDED_BY(wake_mu_);
  bool stopping_ ABSL_GUARDED_BY(wake_mu_) = false;
  std::thread notifier_;
};

}  // namespace virtgate
