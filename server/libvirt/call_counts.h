// CallCounts: how many libvirt calls virtgated made, by procedure name
// ("virConnectGetAllDomainStats", ...). Tests use it to show that a read
// served from the domain cache makes none; metrics can export it.
// Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace virtgate {

class CallCounts {
 public:
  void Add(absl::string_view procedure, uint64_t n = 1);
  uint64_t Get(absl::string_view procedure) const;
  uint64_t Total() const;
  std::map<std::string, uint64_t> All() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, uint64_t> counts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace virtgate
