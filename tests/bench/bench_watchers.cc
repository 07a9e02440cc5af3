#include "tests/bench/bench_watchers.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace virtgate::bench {

void WatchBoard::Arm(int expected_receipts) {
  absl::MutexLock lock(&mu_);
  t0_ = absl::Now();
  armed_left_ = expected_receipts;
}

bool WatchBoard::WaitArmed(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return armed_left_ <= 0; };
  return mu_.AwaitWithDeadline(absl::Condition(&done), deadline);
}

bool WatchBoard::WaitSynced(int watchers, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return synced_ >= watchers; };
  return mu_.AwaitWithDeadline(absl::Condition(&done), deadline);
}

std::vector<double> WatchBoard::latencies_us() const {
  absl::MutexLock lock(&mu_);
  return latencies_us_;
}
absl::Time WatchBoard::last_synced() const {
  absl::MutexLock lock(&mu_);
  return last_synced_;
}
int64_t WatchBoard::events() const {
  absl::MutexLock lock(&mu_);
  return events_;
}
int64_t WatchBoard::initials() const {
  absl::MutexLock lock(&mu_);
  return initials_;
}
std::vector<std::string> WatchBoard::problems() const {
  absl::MutexLock lock(&mu_);
  return problems_;
}

void WatchBoard::OnEvent(uint64_t sequence, uint64_t previous) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  ++events_;
  if (previous != 0 && sequence != previous + 1) {
    problems_.push_back(absl::StrCat("a watcher got sequence ", sequence, " after ", previous));
  }
  if (armed_left_ > 0) {
    latencies_us_.push_back(absl::ToDoubleMicroseconds(now - t0_));
    --armed_left_;
  }
}

void WatchBoard::OnInitial() {
  absl::MutexLock lock(&mu_);
  ++initials_;
}

void WatchBoard::OnSynced(uint64_t) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  ++synced_;
  last_synced_ = std::max(last_synced_, now);
}

void WatchBoard::OnEnded(const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  problems_.push_back(
      absl::StrCat("a watch ended early: ", status.error_code(), " ", status.error_message()));
}

BenchWatcher::BenchWatcher(v1::Hypervisor::Stub* stub, const v1::WatchLifecycleRequest& request,
                           WatchBoard* board)
    : board_(board), request_(request) {
  stub->async()->WatchLifecycle(&ctx_, &request_, this);
  StartRead(&message_);
  StartCall();
}

void BenchWatcher::OnReadDone(bool ok) {
  if (!ok) return;
  switch (message_.payload_case()) {
    case v1::WatchLifecycleResponse::kEvent:
      board_->OnEvent(message_.sequence(), last_sequence_);
      last_sequence_ = message_.sequence();
      break;
    case v1::WatchLifecycleResponse::kInitial:
      board_->OnInitial();
      break;
    case v1::WatchLifecycleResponse::kSynced:
      last_sequence_ = message_.sequence();
      board_->OnSynced(last_sequence_);
      break;
    default:
      last_sequence_ = message_.sequence();
      break;
  }
  StartRead(&message_);
}

void BenchWatcher::OnDone(const grpc::Status& status) {
  if (!stopping_) board_->OnEnded(status);
  done_.Notify();
}

void BenchWatcher::Stop() {
  if (done_.HasBeenNotified()) return;
  stopping_ = true;
  ctx_.TryCancel();
  done_.WaitForNotification();
}

std::vector<std::unique_ptr<v1::Hypervisor::Stub>> Stubs(const std::string& target, int count,
                                                         Connections connections) {
  std::vector<std::unique_ptr<v1::Hypervisor::Stub>> out;
  std::shared_ptr<grpc::Channel> shared;
  for (int i = 0; i < count; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 64 * 1024 * 1024);
    if (connections == kOwnConnections || !shared) {
      shared = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    }
    out.push_back(v1::Hypervisor::NewStub(shared));
  }
  return out;
}

}  // namespace virtgate::bench
