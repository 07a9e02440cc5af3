// DomainFactsCache: per-domain facts that bulk stats do not carry on every
// driver (the test driver's bulk stats have only the state), keyed by UUID.
//
// An entry is valid while the domain keeps the name and runtime id it had
// when the entry was filled (a restart gets a new id, and a rename a new name,
// so either refreshes it), and for at most `ttl`, which bounds how long a
// redefinition of an inactive domain can go unseen. Invalidate() drops an
// entry (lifecycle events will call it on redefinition); Retain() prunes
// domains that no longer exist.
//
// Thread-safe; never calls libvirt while holding its lock.
#pragma once

#include <libvirt/libvirt.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace virtgate {

struct DomainFacts {
  std::string name;
  uint32_t id = 0;
  int state = 0;         // as seen at fill time (virDomainState)
  uint32_t vcpus = 0;
  uint64_t memory_kib = 0;
  uint64_t max_memory_kib = 0;
  bool persistent = false;
  bool autostart = false;
  absl::Time fetched;
};

class DomainFactsCache {
 public:
  explicit DomainFactsCache(absl::Duration ttl = absl::Minutes(5)) : ttl_(ttl) {}

  // The entry for `uuid` if it was filled for this name and id.
  std::optional<DomainFacts> Lookup(const std::string& uuid, const std::string& name,
                                    uint32_t id) const;
  // The entry for `uuid` whatever its key (the last known facts), if any.
  std::optional<DomainFacts> LastKnown(const std::string& uuid) const;

  // Reads the facts from libvirt (3 round trips on a remote connection) and
  // stores them. Errors are libvirt's, mapped (NOT_FOUND when it vanished).
  absl::StatusOr<DomainFacts> Fetch(virDomainPtr dom, const std::string& uuid);

  // Keeps what a listing read without asking (from complete bulk stats) as
  // the domain's last known facts, should it become unreadable later.
  void Remember(const std::string& uuid, const DomainFacts& facts);

  void Invalidate(const std::string& uuid);
  // Drops every entry whose UUID is not in `uuids`.
  void Retain(const std::vector<std::string>& uuids);
  size_t size() const;
  // How many times Fetch read from libvirt (for tests and metrics).
  uint64_t fetches() const;

 private:
  const absl::Duration ttl_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, DomainFacts> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t fetches_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace virtgate
