#include "server/rpc/coalescer.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/time/clock.h"

namespace virtgate {

bool Coalescer::Add(EventHub::Message event) {
  const bool opened = pending_.empty();
  if (opened) closes_at_ = absl::Now() + window_;
  pending_[event->event().domain_uuid()] = std::move(event);
  return opened;
}

void Coalescer::Close(std::deque<EventHub::Message>* out) {
  std::vector<EventHub::Message> batch;
  batch.reserve(pending_.size());
  for (auto& [uuid, m] : pending_) batch.push_back(std::move(m));
  pending_.clear();
  std::sort(batch.begin(), batch.end(),
            [](const EventHub::Message& a, const EventHub::Message& b) {
              return a->sequence() < b->sequence();
            });
  for (EventHub::Message& m : batch) out->push_back(std::move(m));
}

}  // namespace virtgate
