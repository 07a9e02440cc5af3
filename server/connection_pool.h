// ConnectionPool: K libvirt connections to one URI, shared by the workers.
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
// - Liveness: a close callback (where the driver has one), keepalive (remote
//   URIs) and virConnectIsAlive() after each lease mark a connection broken. A
//   maintenance thread closes broken connections and reopens missing ones
//   with exponential backoff and jitter. Acquire() never opens a connection
//   itself, so while none is up it fails at once with UNAVAILABLE
//   ("hypervisor unavailable: <uri>: <libvirt error>").
// - Stalls: opening a connection to a stopped libvirtd can block for as long
//   as the daemon is stopped. Only the maintenance thread opens, so calls and
//   health never wait for it, and Shutdown() abandons it after its deadline.
//
// Thread-safe. Acquire() blocks only while every live connection is at its
// admission cap, and never past its deadline; call it from worker threads.
#pragma once

#include <libvirt/libvirt.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace virtgate {

class ConnectionPool {
 public:
  struct Options {
    std::string uri = "test:///default";
    int size = 8;
    bool read_only = true;
    int max_calls_per_connection = 1;
    // libvirt keepalive (remote URIs): ping every interval seconds, give up
    // after count unanswered pings. interval <= 0 disables it.
    int keepalive_interval_s = 5;
    int keepalive_count = 5;
    absl::Duration initial_backoff = absl::Milliseconds(200);
    absl::Duration max_backoff = absl::Seconds(30);  // --reconnect_max_backoff
    // How often the maintenance thread checks liveness on its own (the close
    // callback usually tells it sooner).
    absl::Duration check_interval = absl::Seconds(1);
    // Longest Acquire() waits for a free admission slot when the caller's
    // deadline is later (or infinite); then RESOURCE_EXHAUSTED.
    absl::Duration max_admission_wait = absl::Seconds(30);
    // How long Create() waits for the first attempt to open the connections
    // (a reachable libvirt is then up when Create returns; a stalled one is
    // not waited for longer).
    absl::Duration initial_connect_wait = absl::Seconds(5);
    // Connection 0 also carries the event registrations. Called on the
    // maintenance thread each time it is (re)opened, before it is leased
    // out; registrations die with the connection, so this re-establishes
    // them after every reconnect. An error closes the connection again and
    // counts as a failed open (retried with backoff).
    std::function<absl::Status(virConnectPtr)> on_event_connection;
    // Called on the maintenance thread, with the reason, when connection 0
    // is dropped as dead or an attempt to (re)establish it fails. May be
    // called once per failed attempt.
    std::function<void(const std::string& reason)> on_event_connection_lost;
    // Called just before the pool closes connection 0 (on the maintenance
    // thread, or at shutdown on a closing thread): drop the registrations
    // made by on_event_connection, which hold references to it.
    std::function<void(virConnectPtr)> on_event_connection_closing;
  };

  struct Snapshot {
    int connections_up = 0;
    int connections_total = 0;
    int in_flight = 0;
    std::string last_error;
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

   private:
    friend class ConnectionPool;
    Lease(std::shared_ptr<Core> core, int slot, uint64_t generation, virConnectPtr conn,
          bool hold);
    void Release();

    std::shared_ptr<Core> core_;
    int slot_ = -1;
    uint64_t generation_ = 0;  // which connection of the slot this lease counts against
    virConnectPtr conn_ = nullptr;
    bool hold_ = false;  // from Hold(): counts as a hold, not an admission
  };

  // Initialises libvirt's event loop and starts the maintenance thread, which
  // opens the connections; waits up to initial_connect_wait for its first
  // attempt. Fails only for bad options; an unreachable or stalled libvirt is
  // not an error here (the pool keeps trying, and reports it).
  static absl::StatusOr<std::unique_ptr<ConnectionPool>> Create(Options options);
  ~ConnectionPool();  // Shutdown()

  // A connection with a free admission slot, least loaded first.
  // UNAVAILABLE at once while no connection is up; DEADLINE_EXCEEDED when
  // `deadline` passes while all are at their cap; RESOURCE_EXHAUSTED after
  // max_admission_wait.
  absl::StatusOr<Lease> Acquire(absl::Time deadline);

  // Called on the maintenance thread whenever the pool goes from no live
  // connection to some (true) or back (false). Also called once, at once, with
  // the current value. Keep it short.
  void SetAvailabilityListener(std::function<void(bool up)> listener);

  // A call on `conn` is stuck in libvirt (e.g. on a QEMU that does not
  // answer), and libvirt's client then serves the connection's other calls
  // only at its next wakeup: stop leasing it and open a replacement. The
  // stuck call keeps its own reference. Never the event connection (slot
  // 0); returns whether it was retired.
  bool Retire(virConnectPtr conn);

  // A hold on `conn`, outside admission, for a call that must go on running
  // on it after its caller's lease is released (a bulk-stats call left
  // behind because a guest does not answer): while any hold is out, the
  // connection gets no new leases, so no second thread starts calling on
  // it. nullopt if `conn` is not one of the pool's current connections, or
  // is its only one (holding that would stop every call).
  std::optional<Lease> Hold(virConnectPtr conn);

  Snapshot GetSnapshot() const;
  const Options& options() const { return options_; }

  // Stops the maintenance thread and drops the pool's connections (leases
  // still out keep theirs alive until released). Waits until `deadline` (but
  // at least 200ms) at most: a maintenance thread or a close stuck in a
  // stalled libvirtd is
  // abandoned (it holds its own reference to the pool's state). Idempotent.
  void Shutdown(absl::Time deadline = absl::InfiniteFuture());

 private:
  explicit ConnectionPool(Options options);

  const Options options_;
  std::shared_ptr<Core> core_;
};

}  // namespace virtgate
