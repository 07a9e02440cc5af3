#include "tests/support/watch_recorder.h"

#include <utility>

namespace virtgate::testing {

WatchRecorder::~WatchRecorder() {
  session_.Cancel();
  if (thread_.joinable()) thread_.join();
}

WatchCallbacks WatchRecorder::Callbacks() {
  WatchCallbacks cb;
  cb.on_message = [this](const v1::WatchLifecycleResponse& m) {
    std::lock_guard<std::mutex> lock(mu_);
    messages_.push_back(m);
    changed_.notify_all();
  };
  cb.on_resync = [this](const std::string& why) {
    std::lock_guard<std::mutex> lock(mu_);
    resyncs_.push_back({why, messages_.size()});
    changed_.notify_all();
  };
  cb.on_retry = [this](const absl::Status& why, absl::Duration delay) {
    std::lock_guard<std::mutex> lock(mu_);
    retries_.push_back({why, delay});
    changed_.notify_all();
  };
  return cb;
}

void WatchRecorder::Start(const Client& client, v1::WatchLifecycleRequest request) {
  Start(client, std::move(request), Callbacks());
}

void WatchRecorder::Start(const Client& client, v1::WatchLifecycleRequest request,
                          WatchCallbacks callbacks) {
  thread_ = std::thread([this, &client, request = std::move(request),
                         callbacks = std::move(callbacks)] {
    absl::Status result = client.WatchLifecycle(request, callbacks, &session_);
    std::lock_guard<std::mutex> lock(mu_);
    result_ = result;
    changed_.notify_all();
  });
}

bool WatchRecorder::WaitUntil(const std::function<bool(const State&)>& condition,
                              absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const State state{messages_, resyncs_, retries_, result_};
  return changed_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                           [&] { return condition(state); });
}

bool WatchRecorder::WaitForSequence(uint64_t sequence, absl::Duration timeout) {
  return WaitUntil(
      [&](const State& s) { return !s.messages.empty() && s.messages.back().sequence() >= sequence; },
      timeout);
}

bool WatchRecorder::HasEventOf(const State& s, absl::string_view domain, size_t from) {
  for (size_t i = from; i < s.messages.size(); ++i) {
    if (s.messages[i].has_event() && s.messages[i].event().domain_name() == domain) return true;
  }
  return false;
}

}  // namespace virtgate::testing
