#include "server/rpc/watch_registry.h"

#include "absl/strings/str_cat.h"
#include "server/rpc/watch_reactor.h"

namespace virtgate {

absl::Status WatchRegistry::Add(WatchReactor* watch, const std::string& peer) {
  absl::MutexLock lock(&mu_);
  if (ended_) return absl::UnavailableError("server shutting down");
  size_t& mine = per_peer_[peer];  // erased again below if refused
  if (mine >= limits_.max_watches_per_peer) {
    const size_t open = mine;
    if (mine == 0) per_peer_.erase(peer);
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many watches: client ", peer, " already has ", open,
        " open, the limit (--max_watches_per_peer); end one, or watch several domains in "
        "one stream"));
  }
  if (watches_.size() >= limits_.max_watches) {
    if (mine == 0) per_peer_.erase(peer);
    return absl::ResourceExhaustedError(
        absl::StrCat("too many watches: the server already has ", watches_.size(),
                     " open, the limit (--max_watches); retry later"));
  }
  ++mine;
  watches_.emplace(watch, peer);
  return absl::OkStatus();
}

void WatchRegistry::Remove(WatchReactor* watch) {
  absl::MutexLock lock(&mu_);
  auto it = watches_.find(watch);
  if (it == watches_.end()) return;
  auto peer = per_peer_.find(it->second);
  if (peer != per_peer_.end() && --peer->second == 0) per_peer_.erase(peer);
  watches_.erase(it);
}

void WatchRegistry::EndAll() {
  // Under the lock: a watch cannot be deleted (OnDone removes it first)
  // while we end it.
  absl::MutexLock lock(&mu_);
  ended_ = true;
  for (const auto& [w, peer] : watches_) w->EndForShutdown();
}

size_t WatchRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return watches_.size();
}

}  // namespace virtgate
