#include "server/worker_pool.h"

#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace virtgate {

struct WorkerPool::State {
  explicit State(Options o) : options(o) {}

  const Options options;
  mutable absl::Mutex mu;
  std::deque<Task> queue ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;
  int busy ABSL_GUARDED_BY(mu) = 0;
  int alive ABSL_GUARDED_BY(mu) = 0;  // worker threads not yet exited
  uint64_t rejected ABSL_GUARDED_BY(mu) = 0;
  std::vector<std::thread> threads;  // touched only by the owner thread
  bool shut_down = false;            // likewise: Shutdown ran to its end

  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return stopping || !queue.empty();
  }
  bool AllExited() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return alive == 0; }
  bool OnlyBusyLeft() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return alive == busy; }
};

WorkerPool::WorkerPool(Options options) : state_(std::make_shared<State>(options)) {
  const int n = options.threads > 0 ? options.threads : 1;
  {
    absl::MutexLock lock(&state_->mu);
    state_->alive = n;
  }
  state_->threads.reserve(n);
  for (int i = 0; i < n; ++i) {
    state_->threads.emplace_back([s = state_] { WorkerMain(s); });
  }
}

WorkerPool::~WorkerPool() { Shutdown(absl::InfiniteFuture()); }

absl::Status WorkerPool::Submit(Task task) {
  absl::MutexLock lock(&state_->mu);
  if (state_->stopping) return absl::UnavailableError("server shutting down");
  // Tasks an idle worker is about to take do not count as waiting.
  const int idle = state_->alive - state_->busy;
  if (static_cast<int>(state_->queue.size()) >= state_->options.max_queued + idle) {
    ++state_->rejected;
    return absl::ResourceExhaustedError(absl::StrCat(
        "server busy: ", state_->queue.size(), " calls already queued for ", state_->alive,
        " libvirt workers (--max_queued_calls); retry with backoff"));
  }
  state_->queue.push_back(std::move(task));
  return absl::OkStatus();
}

int WorkerPool::Shutdown(absl::Time deadline) {
  if (state_->shut_down) {
    absl::MutexLock lock(&state_->mu);
    return state_->alive;
  }
  std::deque<Task> cancelled;
  {
    absl::MutexLock lock(&state_->mu);
    state_->stopping = true;
    cancelled.swap(state_->queue);
  }
  for (Task& task : cancelled) task(/*cancelled=*/true);

  int abandoned = 0;
  {
    absl::MutexLock lock(&state_->mu);
    state_->mu.AwaitWithDeadline(absl::Condition(state_.get(), &State::AllExited), deadline);
    // Idle workers exit as soon as they wake; only busy ones are abandoned.
    state_->mu.Await(absl::Condition(state_.get(), &State::OnlyBusyLeft));
    abandoned = state_->busy;
  }
  for (std::thread& t : state_->threads) {
    if (!t.joinable()) continue;
    // A worker still inside a libvirt call cannot be interrupted; it holds its
    // own reference to State and exits when the call returns.
    if (abandoned > 0) t.detach(); else t.join();
  }
  state_->threads.clear();
  state_->shut_down = true;
  return abandoned;
}

WorkerPool::Stats WorkerPool::GetStats() const {
  absl::MutexLock lock(&state_->mu);
  Stats stats;
  stats.threads = state_->alive;
  stats.busy = state_->busy;
  stats.queued = static_cast<int>(state_->queue.size());
  stats.rejected = state_->rejected;
  return stats;
}

void WorkerPool::WorkerMain(const std::shared_ptr<State>& state) {
  for (;;) {
    Task task;
    {
      absl::MutexLock lock(&state->mu);
      state->mu.Await(absl::Condition(state.get(), &State::HasWorkOrStopping));
      if (state->queue.empty()) {  // stopping, nothing left to run
        --state->alive;
        return;
      }
      task = std::move(state->queue.front());
      state->queue.pop_front();
      ++state->busy;
    }
    task(/*cancelled=*/false);
    absl::MutexLock lock(&state->mu);
    --state->busy;
  }
}

}  // namespace virtgate
