// InitialStates: the messages that open a send_initial_state watch, from a
// DomainCache snapshot taken at sequence S: one `initial` per domain, then
// `synced`, each stamped with S (the events that follow have sequences
// after S). Built one at a time as the stream is written: a thousand
// watchers of a thousand domains would otherwise hold a million messages.
//
// While the cache is not current (events are not flowing), every domain is
// sent stale: its last known state may be old. Not thread-safe (the watch
// owns it).
#pragma once

#include <memory>
#include <vector>

#include "server/state/domain_cache.h"
#include "server/state/event_hub.h"

namespace virtgate {

class InitialStates {
 public:
  InitialStates(const EventHub* hub, DomainCache::View snapshot)
      : hub_(hub), snapshot_(std::move(snapshot)) {}

  // The next message; nullptr once `synced` has been handed out.
  EventHub::Message Next();
  uint64_t sequence() const { return snapshot_.sequence; }

 private:
  const EventHub* const hub_;
  const DomainCache::View snapshot_;
  size_t next_ = 0;  // == size: synced is next; size + 1: done
};

}  // namespace virtgate
