#include "tests/support/watch_collector.h"

#include <libvirt/libvirt.h>

#include "absl/strings/str_cat.h"

namespace virtgate::testing {

WatchCollector::WatchCollector(v1::Hypervisor::Stub* stub,
                               const v1::WatchLifecycleRequest& request, bool read)
    : reader_(stub->WatchLifecycle(&ctx_, request)) {
  if (read) StartReading();
}

WatchCollector::~WatchCollector() {
  ctx_.TryCancel();
  if (thread_.joinable()) thread_.join();
}

void WatchCollector::StartReading() {
  thread_ = std::thread([this] { ReadAll(); });
}

std::vector<v1::WatchLifecycleResponse> WatchCollector::Messages() {
  absl::MutexLock lock(&mu_);
  return messages_;
}

bool WatchCollector::WaitForCount(size_t n, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return messages_.size() >= n || done_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  return messages_.size() >= n;
}

bool WatchCollector::WaitForMessage(
    const std::function<bool(const v1::WatchLifecycleResponse&)>& pred, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  size_t checked = 0;
  bool found = false;
  auto seen = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (; checked < messages_.size() && !found; ++checked) found = pred(messages_[checked]);
    return found || done_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&seen), timeout);
  return found;
}

std::optional<grpc::Status> WatchCollector::WaitForEnd(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&done_), timeout);
  if (!done_) return std::nullopt;
  return status_;
}

std::string WatchCollector::Trailer(const std::string& key) {
  auto md = ctx_.GetServerTrailingMetadata();
  auto it = md.find(key);
  return it == md.end() ? "" : std::string(it->second.data(), it->second.size());
}

void WatchCollector::ReadAll() {
  v1::WatchLifecycleResponse m;
  while (reader_->Read(&m)) {
    absl::MutexLock lock(&mu_);
    messages_.push_back(m);
  }
  grpc::Status s = reader_->Finish();
  absl::MutexLock lock(&mu_);
  status_ = s;
  done_ = true;
}

std::string Describe(const v1::WatchLifecycleResponse& m) {
  if (m.has_connection()) {
    return absl::StrCat("connection ", v1::ConnectionChange::State_Name(m.connection().state()),
                        " (", m.connection().reason(), ")");
  }
  if (!m.has_event()) return "non-event";
  return absl::StrCat(m.event().domain_name(), " ", v1::LifecycleEventType_Name(m.event().type()),
                      "/", m.event().detail(), m.event().synthetic() ? " (synthetic)" : "");
}

std::string ClientView::Apply(const v1::WatchLifecycleResponse& m) {
  const std::string what = absl::StrCat("seq ", m.sequence(), " ", Describe(m));
  if (m.has_connection()) {
    const bool lost = m.connection().state() == v1::ConnectionChange::STATE_LOST;
    if (lost == !connected_) return absl::StrCat(what, ": repeats the connection state");
    connected_ = !lost;
    (lost ? lost_ : restored_)++;
    return "";
  }
  if (m.has_initial()) {
    const v1::Domain& d = m.initial().domain();
    const bool active = d.state() == v1::DOMAIN_STATE_RUNNING ||
                        d.state() == v1::DOMAIN_STATE_PAUSED;
    domains_[d.uuid()] = {d.name(), active, d.state() == v1::DOMAIN_STATE_PAUSED,
                          d.persistent()};
    return "";
  }
  if (!m.has_event()) return "";
  const v1::LifecycleEvent& e = m.event();
  if (e.synthetic()) ++synthetic_;
  Domain& d = domains_[e.domain_uuid()];
  d.name = e.domain_name();
  std::string problem;
  switch (e.type()) {
    case v1::LIFECYCLE_EVENT_TYPE_DEFINED:
      d.persistent = true;
      return "";
    case v1::LIFECYCLE_EVENT_TYPE_UNDEFINED:
      d.persistent = false;
      if (!d.active) domains_.erase(e.domain_uuid());
      return "";
    case v1::LIFECYCLE_EVENT_TYPE_STARTED:
      if (d.active) problem = "STARTED while active";
      d.active = true;
      d.paused = false;
      break;
    case v1::LIFECYCLE_EVENT_TYPE_SUSPENDED:
      if (!d.active || d.paused) problem = "SUSPENDED while not running";
      d.paused = true;
      break;
    case v1::LIFECYCLE_EVENT_TYPE_RESUMED:
      if (!d.paused) problem = "RESUMED while not paused";
      d.paused = false;
      break;
    case v1::LIFECYCLE_EVENT_TYPE_STOPPED:
      if (!d.active) problem = "STOPPED while inactive";
      d.active = false;
      d.paused = false;
      if (!d.persistent) domains_.erase(e.domain_uuid());  // a transient domain is gone
      break;
    default:
      break;
  }
  return problem.empty() ? "" : absl::StrCat(what, ": ", problem);
}

std::vector<std::string> ClientView::DiffFrom(
    const std::map<std::string, TruthEntry>& truth) const {
  std::vector<std::string> diffs;
  for (const auto& [uuid, t] : truth) {
    auto it = domains_.find(uuid);
    const bool active = t.state == VIR_DOMAIN_RUNNING || t.state == VIR_DOMAIN_PAUSED;
    const bool paused = t.state == VIR_DOMAIN_PAUSED;
    if (it == domains_.end()) {
      diffs.push_back(absl::StrCat(t.name, ": in libvirt, not in the view"));
    } else if (it->second.active != active || it->second.paused != paused) {
      diffs.push_back(absl::StrCat(t.name, ": view active=", it->second.active,
                                   " paused=", it->second.paused, ", libvirt state ", t.state));
    }
  }
  for (const auto& [uuid, d] : domains_) {
    // A transient domain that stopped is gone; a view entry that is
    // inactive and not in libvirt must have been undefined.
    if (!truth.count(uuid) && d.active) {
      diffs.push_back(absl::StrCat(d.name, ": active in the view, not in libvirt"));
    } else if (!truth.count(uuid)) {
      diffs.push_back(absl::StrCat(d.name, ": in the view, not in libvirt"));
    }
  }
  return diffs;
}

}  // namespace virtgate::testing
