// ConnectionPool: K libvirt connections to one URI that serve calls, all
// alike. (Lifecycle events have a connection of their own: LifecycleFeed.)
//
// - Admission: a connection carries at most `max_calls_per_connection`
//   leases at a time (default 1); the pool scales by holding several
//   connections. One call per connection because libvirt 9.0's client is not
//   safe with several threads in calls on a connection that dies: the thread
//   running the connection's I/O loop can leave a poll source behind that
//   points into its own stack, and the next thread to take over the loop
//   crashes on it (seen under ASan in the kill -9 resilience test). Never
//   more than libvirtd's max_client_requests (default 5): libvirtd queues
//   the rest behind them, starving the connection's keepalive.
// - Liveness: a close callback and keepalive (remote URIs), and
//   virConnectIsAlive() after each lease, mark a connection broken. Whoever
//   notices updates Availability at once (so health never waits for a
//   thread stuck in libvirt). A maintenance thread closes broken connections
//   and reopens missing ones with backoff (see Connector). Acquire() never
//   opens a connection itself, so while none is up it fails at once with
//   UNAVAILABLE ("hypervisor unavailable: <uri>: <libvirt error>").
// - Stalls: opening a connection to a stopped libvirtd blocks for as long as
//   the daemon is stopped. Only the maintenance thread opens, so calls and
//   health never wait for it, and Shutdown() abandons it after its deadline.
// - Retire: a call stuck on a guest that does not answer poisons its
//   connection (libvirt's client serves its other calls only at the next
//   keepalive wakeup): the pool stops leasing it and opens a replacement;
//   the stuck call keeps its own reference.
//
// Thread-safe. Acquire() blocks only while every live connection is at its
// admission cap, and never past its deadline; call it from worker threads.
#pragma once

#include <libvirt/libvirt.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/libvirt/connector.h"
#include "server/libvirt/domain_handles.h"
#include "server/state/availability.h"

namespace virtgate {

// The most calls one connection may carry at once: libvirtd's default
// max_client_requests. A connection with more queued behind them starves
// its own keepalive (its pings wait in the same queue), and libvirtd then
// declares it dead.
inline constexpr int kMaxCallsPerConnection = 5;

// --max_calls_per_connection checked: 1 to kMaxCallsPerConnection, or an
// INVALID_ARGUMENT that says why.
absl::Status CheckMaxCallsPerConnection(int calls);

class ConnectionPool {
 public:
  struct Options {
    ConnectOptions connect;
    int size = 8;
    int max_calls_per_connection = 1;
    absl::Duration initial_backoff = absl::Milliseconds(200);
    absl::Duration max_backoff = absl::Seconds(30);  // --reconnect_max_backoff
    // How often the maintenance thread checks liveness on its own (the close
    // callback usually tells it sooner).
    absl::Duration check_interval = absl::Seconds(1);
    // Longest Acquire() waits for a free admission slot when the caller's
    // deadline is later (or infinite); then RESOURCE_EXHAUSTED.
    absl::Duration max_admission_wait = absl::Seconds(30);
  };

  struct Snapshot {
    int connections_up = 0;
    int connections_total = 0;
    int in_flight = 0;
    std::string last_error;  // empty once every connection is up
    uint64_t reconnects = 0;  // connections opened again after one was lost or retired
    bool up() const { return connections_up > 0; }
  };

  class Core;

  // A borrowed connection: holds one admission slot and one libvirt reference
  // until destroyed. Movable, not copyable. Use it on one thread.
  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

    virConnectPtr get() const { return conn_; }
    // The domain handles of this connection (they live as long as it does).
    DomainHandles& handles() const { return *handles_; }

   private:
    friend class ConnectionPool;
    Lease(std::shared_ptr<Core> core, int slot, uint64_t generation, virConnectPtr conn,
          std::shared_ptr<DomainHandles> handles);
    void Release();

    std::shared_ptr<Core> core_;
    int slot_ = -1;
    uint64_t generation_ = 0;  // which connection of the slot this lease counts against
    virConnectPtr conn_ = nullptr;
    std::shared_ptr<DomainHandles> handles_;
  };

  // Initialises libvirt's event loop and starts the maintenance thread, which
  // opens the connections (see WaitForFirstAttempt). Fails only for bad
  // options; an unreachable or stalled libvirt is not an error here (the
  // pool keeps trying, and reports it). `availability` learns whether any
  // connection is up; `reconnect` is told when one opens after a failure
  // (and tells the pool when something else reached libvirtd). Both must
  // outlive the pool's threads: pass shared ones.
  static absl::StatusOr<std::unique_ptr<ConnectionPool>> Create(
      Options options, std::shared_ptr<Availability> availability,
      std::shared_ptr<ReconnectSignal> reconnect);
  ~ConnectionPool();  // Shutdown()

  // Waits until the maintenance thread has tried every connection once, or
  // `deadline` (a stalled libvirtd is not waited for longer). True if it did.
  bool WaitForFirstAttempt(absl::Time deadline);

  // A connection with a free admission slot, least loaded first.
  // UNAVAILABLE at once while no connection is up; DEADLINE_EXCEEDED when
  // `deadline` passes while all are at their cap (at once for a past
  // deadline: a try); RESOURCE_EXHAUSTED after max_admission_wait.
  absl::StatusOr<Lease> Acquire(absl::Time deadline);

  // Stops leasing `conn` and opens a replacement (see the header comment).
  // False if it is not one of the pool's current connections.
  bool Retire(virConnectPtr conn);

  Snapshot GetSnapshot() const;
  const Options& options() const { return options_; }

  // Stops the maintenance thread and drops the pool's connections (leases
  // still out keep theirs alive until released). Waits until `deadline` (but
  // at least 200ms) at most: a maintenance thread or a close stuck in a
  // stalled libvirtd is abandoned (it holds its own reference to the pool's
  // state). Idempotent.
  void Shutdown(absl::Time deadline = absl::InfiniteFuture());

 private:
  explicit ConnectionPool(Options options) : options_(std::move(options)) {}

  const Options options_;
  std::shared_ptr<Core> core_;
};

}  // namespace virtgate
