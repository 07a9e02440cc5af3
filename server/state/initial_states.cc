#include "server/state/initial_states.h"

#include <utility>

namespace virtgate {

EventHub::Message InitialStates::Next() {
  if (next_ > snapshot_.domains.size()) return nullptr;
  v1::WatchLifecycleResponse m;
  hub_->Stamp(&m, snapshot_.sequence);
  if (next_ == snapshot_.domains.size()) {
    m.mutable_synced();
  } else {
    v1::Domain* d = m.mutable_initial()->mutable_domain();
    *d = *snapshot_.domains[next_];
    if (!snapshot_.current) d->set_stale(true);
  }
  ++next_;
  return HubMessage(std::move(m));  // this stream's own: serialized for it alone
}

}  // namespace virtgate
