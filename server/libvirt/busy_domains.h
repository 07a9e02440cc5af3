// BusyDomains: which domains have a libvirt call stuck on them right now.
//
// Every call the lister makes about one domain (reading its facts, GetDomain)
// is tracked with its deadline. A domain is busy while such a call has run
// past its deadline: its QEMU monitor is not answering, or its job lock is
// held by something that does not finish. A call cannot be cancelled, so
// the worker stays stuck; but later work does not queue behind it: listings
// leave a busy domain out of their bulk stats and report it with its last
// known facts and `stale` set, and GetDomain answers the same at once. The
// domain stops being busy as soon as the stuck call returns.
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace virtgate {

class BusyDomains {
 public:
  // A call without a deadline counts as stuck after this long.
  static constexpr absl::Duration kStuckAfter = absl::Seconds(30);

  // Tracks one call until destroyed.
  class Call {
   public:
    Call(Call&& other) noexcept : owner_(other.owner_), id_(other.id_) { other.owner_ = nullptr; }
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;
    Call& operator=(Call&&) = delete;
    ~Call();

   private:
    friend class BusyDomains;
    Call(BusyDomains* owner, uint64_t id) : owner_(owner), id_(id) {}
    BusyDomains* owner_;
    uint64_t id_;
  };

  // `this` must outlive the Call (the lister owns both through shared_ptrs
  // that stuck workers hold).
  Call Begin(const std::string& uuid, absl::Time deadline);
  bool IsBusy(const std::string& uuid) const;
  // UUIDs of the busy domains.
  std::vector<std::string> Busy() const;

 private:
  struct Running {
    std::string uuid;
    absl::Time stuck_at;
  };
  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, Running> running_ ABSL_GUARDED_BY(mu_);
};

}  // namespace virtgate
