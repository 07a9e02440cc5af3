// Coalescer: a watch's opt-in coalescing window (coalesce_ms). The first
// event opens a window; when it closes, each domain's burst is reduced to
// its last event, and those are released in sequence order (so sequences
// stay increasing and resume stays exact). A connection change closes the
// window at once (the watch calls Close first).
//
// Not thread-safe: the watch calls it under its own lock.
#pragma once

#include <deque>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "server/state/event_hub.h"

namespace virtgate {

class Coalescer {
 public:
  explicit Coalescer(absl::Duration window) : window_(window) {}

  bool enabled() const { return window_ > absl::ZeroDuration(); }
  bool open() const { return !pending_.empty(); }
  // When the open window closes.
  absl::Time closes_at() const { return closes_at_; }

  // Takes an event; true if it opened a window (schedule a wake-up at
  // closes_at()).
  bool Add(EventHub::Message event);
  // Appends the window's events to `out`, in sequence order, and closes it.
  void Close(std::deque<EventHub::Message>* out);

 private:
  const absl::Duration window_;
  absl::flat_hash_map<std::string, EventHub::Message> pending_;  // the last one per domain
  absl::Time closes_at_;
};

}  // namespace virtgate
