// UnaryCall: runs the libvirt part of a unary RPC on the WorkerPool and
// finishes the RPC from the worker, so gRPC's reactor threads never block.
//
// The RPC is finished exactly once, by whichever comes first:
//   - the work's result (on the worker thread);
//   - RESOURCE_EXHAUSTED / UNAVAILABLE at once, if the pool refuses the task;
//   - UNAVAILABLE ("server shutting down") if the pool drops it unstarted;
//   - CANCELLED or DEADLINE_EXCEEDED, when the client cancels or its deadline
//     passes (OnCancel):
//     the client gets its status on time and the worker's late result is
//     dropped, so a stuck libvirt call never holds an RPC past its deadline;
//   - DEADLINE_EXCEEDED at the server's own limit (--max_call_time), when the
//     client set no deadline or a later one: gRPC does not end those, so a
//     timer does. The work is given the earlier of the two.
//
// Lifetime: gRPC owns the reactor until OnDone, which deletes it. The worker
// only holds `Shared`, and touches the reactor and the gRPC-owned response
// only after winning the finish race, before Finish (so before OnDone).
#pragma once

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/base/timer_thread.h"
#include "server/libvirt/worker_pool.h"
#include "server/rpc/grpc_status.h"

namespace virtgate {

// Where a unary call's libvirt work runs, and for how long at most.
struct CallRunner {
  WorkerPool* workers = nullptr;
  TimerThread* timers = nullptr;  // ends calls at max_call_time (none: no limit)
  absl::Duration max_call_time = absl::Seconds(60);
};

template <typename Response>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  // `work` runs on a worker with the RPC's deadline; it must own copies of
  // whatever it reads from the request (the request dies with the RPC).
  using Work = std::function<absl::StatusOr<Response>(absl::Time deadline)>;

  static grpc::ServerUnaryReactor* Start(grpc::CallbackServerContext* ctx, Response* response,
                                         const CallRunner& runner, Work work) {
    const absl::Time client_deadline = absl::FromChrono(ctx->deadline());
    const absl::Time limit = absl::Now() + runner.max_call_time;
    const absl::Time deadline = std::min(client_deadline, limit);
    auto* call = new UnaryCall(response, deadline);
    std::shared_ptr<Shared> shared = call->shared_;
    absl::Status queued = runner.workers->Submit([shared, deadline, work = std::move(work)](bool cancelled) {
      if (cancelled) {
        shared->Finish(absl::UnavailableError("server shutting down"));
        return;
      }
      if (shared->finished()) return;  // the client already gave up
      if (absl::Now() >= deadline) {
        // Expired while queued: do not start a libvirt call nobody awaits.
        shared->Finish(absl::DeadlineExceededError("deadline exceeded"));
        return;
      }
      shared->Finish(work(deadline));
    }, deadline);
    if (!queued.ok()) {
      shared->Finish(queued);
    } else if (limit < client_deadline && runner.timers != nullptr) {
      shared->EndAt(runner.timers, limit);
    }
    return call;
  }

  void OnCancel() override {
    // gRPC cancels both when the client does and when the deadline passes.
    shared_->Finish(absl::Now() >= deadline_
                        ? absl::DeadlineExceededError("deadline exceeded")
                        : absl::CancelledError("call cancelled by client"));
  }
  void OnDone() override { delete this; }

 private:
  struct Shared : std::enable_shared_from_this<Shared> {
    explicit Shared(UnaryCall* c, Response* r) : call(c), response(r) {}

    bool finished() {
      absl::MutexLock lock(&mu);
      return done;
    }
    // Finishes the call with DEADLINE_EXCEEDED at `at` unless it finished
    // first; the timer is cancelled when it does.
    void EndAt(TimerThread* timers, absl::Time at) {
      const TimerThread::Id id = timers->Schedule(at, [self = this->shared_from_this()] {
        self->Finish(absl::DeadlineExceededError(
            "deadline exceeded: the call reached virtgated's limit (--max_call_time)"));
      });
      {
        absl::MutexLock lock(&mu);
        if (!done) {
          timer = {timers, id};
          return;
        }
      }
      timers->Cancel(id);  // it finished meanwhile
    }
    void Finish(absl::StatusOr<Response> result) {
      std::pair<TimerThread*, TimerThread::Id> armed{nullptr, 0};
      {
        absl::MutexLock lock(&mu);
        if (done) return;
        done = true;
        std::swap(armed, timer);
      }
      if (armed.first != nullptr) armed.first->Cancel(armed.second);
      // Winner of the race: the reactor and the response are alive until
      // Finish completes the call.
      if (result.ok()) *response = std::move(*result);
      call->Finish(ToGrpcStatus(result.status()));
    }

    absl::Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = false;
    std::pair<TimerThread*, TimerThread::Id> timer ABSL_GUARDED_BY(mu){nullptr, 0};
    UnaryCall* const call;
    Response* const response;
  };

  UnaryCall(Response* response, absl::Time deadline)
      : deadline_(deadline), shared_(std::make_shared<Shared>(this, response)) {}

  const absl::Time deadline_;
  std::shared_ptr<Shared> shared_;
};

}  // namespace virtgate
