// CallCounts: the libvirt calls virtgated made, by procedure name
// ("virConnectGetAllDomainStats", ...): how many were started, how each
// ended (by status code) and how long they took. Tests use the counts to
// show that a read served from the domain cache makes none; the metrics
// endpoint exports all of it (ServerMetrics). Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/metrics/latency_histogram.h"

namespace virtgate {

class CallCounts {
 public:
  // One call: counted as started when constructed; End() records how it
  // ended and how long it took. A call never ended (stuck in a stalled
  // libvirtd) stays in flight.
  class Call {
   public:
    Call(CallCounts* counts, absl::string_view procedure)
        : counts_(counts), procedure_(procedure), start_(absl::Now()) {
      counts_->Add(procedure_);
    }
    void End(absl::StatusCode code) { counts_->Ended(procedure_, code, absl::Now() - start_); }
    void End(const absl::Status& status) { End(status.code()); }

   private:
    CallCounts* const counts_;
    const absl::string_view procedure_;  // a string literal
    const absl::Time start_;
  };

  struct Procedure {
    uint64_t started = 0;
    // Status code -> calls that ended with it.
    std::map<absl::StatusCode, uint64_t> ended;
    LatencyHistogram latency;  // of the calls that ended
    uint64_t in_flight() const;
  };

  // Counts `n` started calls (that record no outcome).
  void Add(absl::string_view procedure, uint64_t n = 1);
  uint64_t Get(absl::string_view procedure) const;
  uint64_t Total() const;
  std::map<std::string, uint64_t> All() const;
  // Everything, by procedure.
  std::map<std::string, Procedure> Procedures() const;

 private:
  void Ended(absl::string_view procedure, absl::StatusCode code, absl::Duration took);

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Procedure> procedures_ ABSL_GUARDED_BY(mu_);
};

}  // namespace virtgate
