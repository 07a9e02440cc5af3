#include "tests/support/watch_collector.h"

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

}  // namespace virtgate::testing
