// WorkerPool: the bounded set of threads that make every blocking libvirt
// call, so that gRPC's reactor threads never block.
//
// Bounded twice: `threads` workers, and at most `max_queued` tasks waiting for
// one. Submit() on a full queue fails at once with RESOURCE_EXHAUSTED; the
// caller answers its RPC with that status rather than waiting.
//
// Stuck calls: a libvirt call cannot be cancelled, so a worker inside one
// that a stalled libvirtd never answers is lost until the daemon wakes up.
// A task running past its deadline (or past `stuck_after` when it has none)
// counts as stuck. While work is waiting and no worker is free, the pool adds
// one replacement thread per stuck worker, up to `max_replacements`, so that
// a stalled libvirtd cannot leave the server with no free worker forever;
// when a stuck call finally returns and the pool has more than `threads`
// unstuck workers, its thread exits.
//
// Thread-safe. Submit() may be called from any thread, including workers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace virtgate {

class WorkerPool {
 public:
  struct Options {
    int threads = 16;
    int max_queued = 1024;
    // Extra threads at most, beyond `threads`, standing in for stuck ones.
    int max_replacements = 16;
    // A task without a deadline counts as stuck after running this long.
    absl::Duration stuck_after = absl::Seconds(30);
  };

  // Called exactly once: on a worker with cancelled == false, or with
  // cancelled == true (on the thread calling Shutdown) when the pool shuts
  // down before the task started. Either way the task must finish its RPC.
  using Task = std::function<void(bool cancelled)>;

  struct Stats {
    int threads = 0;        // worker threads alive (replacements included)
    int busy = 0;           // workers running a task
    int stuck = 0;          // of those, running past their deadline
    int replacements = 0;   // threads alive beyond Options::threads
    int queued = 0;         // tasks waiting for a worker
    uint64_t rejected = 0;  // Submit calls refused because the queue was full
    uint64_t replacements_started = 0;  // ever
  };

  explicit WorkerPool(Options options);
  ~WorkerPool();  // Shutdown(absl::InfiniteFuture()) if not done yet

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // RESOURCE_EXHAUSTED when max_queued tasks are waiting, UNAVAILABLE after
  // Shutdown; OK means the task will be called exactly once. `deadline` is
  // when the task's caller stops waiting for it (the RPC's deadline).
  absl::Status Submit(Task task, absl::Time deadline = absl::InfiniteFuture());

  // Stops accepting tasks, cancels the queued ones, and waits until `deadline`
  // for running tasks. Workers still busy then (stuck in libvirt, say) are
  // abandoned: they exit when their call returns. Returns how many were
  // abandoned. Idempotent.
  int Shutdown(absl::Time deadline);

  Stats GetStats() const;

 private:
  struct State;
  static void WorkerMain(const std::shared_ptr<State>& state, uint64_t id);
  static void SupervisorMain(const std::shared_ptr<State>& state);

  std::shared_ptr<State> state_;  // shared with the worker threads
};

}  // namespace virtgate
