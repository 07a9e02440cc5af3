#include "server/libvirt/worker_pool.h"

#include <algorithm>
#include <deque>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/base/bounded_run.h"
#include "server/base/log.h"

namespace virtgate {

// Shared by the pool and its threads. Every thread is detached and holds a
// reference, so a worker abandoned in a stuck call outlives the pool safely.
struct WorkerPool::State {
  explicit State(Options o) : options(o) {}

  struct Queued {
    Task task;
    absl::Time deadline;
  };

  const Options options;
  mutable absl::Mutex mu;
  std::deque<Queued> queue ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;
  int busy ABSL_GUARDED_BY(mu) = 0;
  int alive ABSL_GUARDED_BY(mu) = 0;  // worker threads not yet exited
  bool supervisor_alive ABSL_GUARDED_BY(mu) = false;
  uint64_t next_id ABSL_GUARDED_BY(mu) = 0;
  // Busy worker id -> when its task counts as stuck.
  absl::flat_hash_map<uint64_t, absl::Time> stuck_at ABSL_GUARDED_BY(mu);
  uint64_t rejected ABSL_GUARDED_BY(mu) = 0;
  uint64_t replacements_started ABSL_GUARDED_BY(mu) = 0;
  bool shut_down = false;  // touched only by the owner thread

  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return stopping || !queue.empty();
  }
  bool Starved() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return stopping || (!queue.empty() && busy == alive);
  }
  bool Stopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return stopping; }
  bool AllExited() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return alive == 0 && !supervisor_alive;
  }
  bool OnlyBusyLeft() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return alive == busy && !supervisor_alive;
  }
  int StuckLocked(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    int n = 0;
    for (const auto& [id, at] : stuck_at) n += at <= now ? 1 : 0;
    return n;
  }

  void StartWorkerLocked(const std::shared_ptr<State>& self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    ++alive;
    std::thread([self, id = next_id++] { WorkerMain(self, id); }).detach();
  }

  // While work waits and no worker is free: one new thread per stuck worker,
  // within the cap.
  void ReplaceStuckLocked(const std::shared_ptr<State>& self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (stopping || queue.empty() || busy < alive) return;
    const int stuck = StuckLocked(absl::Now());
    const int want = options.threads - (alive - stuck);
    const int room = options.threads + options.max_replacements - alive;
    const int n = std::min(want, room);
    if (n <= 0) return;
    for (int i = 0; i < n; ++i) StartWorkerLocked(self);
    replacements_started += n;
    LogWarning(stuck, " libvirt call(s) stuck past their deadline; started ", n,
               " replacement worker(s) (", alive - options.threads, " of at most ",
               options.max_replacements, ")");
  }
};

WorkerPool::WorkerPool(Options options) : state_(std::make_shared<State>(options)) {
  if (state_->options.threads < 1) {
    state_ = std::make_shared<State>(Options{1, options.max_queued, options.max_replacements,
                                             options.stuck_after});
  }
  absl::MutexLock lock(&state_->mu);
  for (int i = 0; i < state_->options.threads; ++i) state_->StartWorkerLocked(state_);
  state_->supervisor_alive = true;
  std::thread([s = state_] { SupervisorMain(s); }).detach();
}

WorkerPool::~WorkerPool() { Shutdown(absl::InfiniteFuture()); }

absl::Status WorkerPool::Submit(Task task, absl::Time deadline) {
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
  state_->queue.push_back({std::move(task), deadline});
  state_->ReplaceStuckLocked(state_);
  return absl::OkStatus();
}

int WorkerPool::Shutdown(absl::Time deadline) {
  if (state_->shut_down) {
    absl::MutexLock lock(&state_->mu);
    return state_->alive;
  }
  std::deque<State::Queued> cancelled;
  {
    absl::MutexLock lock(&state_->mu);
    state_->stopping = true;
    cancelled.swap(state_->queue);
  }
  for (State::Queued& q : cancelled) q.task(/*cancelled=*/true);

  int abandoned = 0;
  {
    absl::MutexLock lock(&state_->mu);
    state_->mu.AwaitWithDeadline(absl::Condition(state_.get(), &State::AllExited), deadline);
    // Idle workers exit as soon as they wake; only busy ones are abandoned.
    state_->mu.Await(absl::Condition(state_.get(), &State::OnlyBusyLeft));
    abandoned = state_->busy;
    if (abandoned > 0) NoteAbandonedThread();
  }
  state_->shut_down = true;
  return abandoned;
}

WorkerPool::Stats WorkerPool::GetStats() const {
  absl::MutexLock lock(&state_->mu);
  Stats stats;
  stats.threads = state_->alive;
  stats.busy = state_->busy;
  stats.stuck = state_->StuckLocked(absl::Now());
  stats.replacements = std::max(0, state_->alive - state_->options.threads);
  stats.queued = static_cast<int>(state_->queue.size());
  stats.rejected = state_->rejected;
  stats.replacements_started = state_->replacements_started;
  return stats;
}

void WorkerPool::WorkerMain(const std::shared_ptr<State>& state, uint64_t id) {
  for (;;) {
    Task task;
    {
      absl::MutexLock lock(&state->mu);
      state->mu.Await(absl::Condition(state.get(), &State::HasWorkOrStopping));
      if (state->queue.empty()) {  // stopping, nothing left to run
        --state->alive;
        return;
      }
      State::Queued next = std::move(state->queue.front());
      state->queue.pop_front();
      task = std::move(next.task);
      ++state->busy;
      state->stuck_at[id] = std::min(next.deadline, absl::Now() + state->options.stuck_after);
    }
    task(/*cancelled=*/false);
    absl::MutexLock lock(&state->mu);
    --state->busy;
    state->stuck_at.erase(id);
    // A call that was stuck has returned: if its replacement is still here,
    // one of the two is surplus.
    if (!state->stopping &&
        state->alive - state->StuckLocked(absl::Now()) > state->options.threads) {
      --state->alive;
      return;
    }
  }
}

void WorkerPool::SupervisorMain(const std::shared_ptr<State>& state) {
  absl::MutexLock lock(&state->mu);
  for (;;) {
    // A task becomes stuck by time passing, which nothing signals: look
    // while work is waiting with every worker busy.
    state->mu.Await(absl::Condition(state.get(), &State::Starved));
    if (state->stopping) break;
    state->ReplaceStuckLocked(state);
    state->mu.AwaitWithTimeout(absl::Condition(state.get(), &State::Stopping),
                               absl::Milliseconds(100));
    if (state->stopping) break;
  }
  state->supervisor_alive = false;
}

}  // namespace virtgate
