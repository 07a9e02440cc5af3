#include "server/libvirt/call_counts.h"


namespace virtgate {

uint64_t CallCounts::Procedure::in_flight() const {
  uint64_t ended_total = 0;
  for (const auto& [code, n] : ended) ended_total += n;
  return started > ended_total ? started - ended_total : 0;
}

void CallCounts::Add(absl::string_view procedure, uint64_t n) {
  absl::MutexLock lock(&mu_);
  procedures_[procedure].started += n;
}

void CallCounts::Ended(absl::string_view procedure, absl::StatusCode code, absl::Duration took) {
  absl::MutexLock lock(&mu_);
  Procedure& p = procedures_[procedure];
  ++p.ended[code];
  p.latency.Observe(took);
}

uint64_t CallCounts::Get(absl::string_view procedure) const {
  absl::MutexLock lock(&mu_);
  auto it = procedures_.find(procedure);
  return it == procedures_.end() ? 0 : it->second.started;
}

uint64_t CallCounts::Total() const {
  absl::MutexLock lock(&mu_);
  uint64_t total = 0;
  for (const auto& [name, p] : procedures_) total += p.started;
  return total;
}

std::map<std::string, uint64_t> CallCounts::All() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, uint64_t> out;
  for (const auto& [name, p] : procedures_) out[name] = p.started;
  return out;
}

std::map<std::string, CallCounts::Procedure> CallCounts::Procedures() const {
  absl::MutexLock lock(&mu_);
  return std::map<std::string, Procedure>(procedures_.begin(), procedures_.end());
}

}  // namespace virtgate
