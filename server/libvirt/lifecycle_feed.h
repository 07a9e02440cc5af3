// LifecycleFeed: the DomainCache's one source of state and membership. It
// owns a libvirt connection of its own, outside the call pool, and a thread
// that:
//   - opens the connection (Connector: keepalive, close callback, backoff);
//     while it cannot, the cache publishes LOST (once per outage);
//   - after every (re)connect reads the host facts (GetHostInfo's host
//     fields), registers for lifecycle events, and lists every domain's
//     state (the state group, which no frozen QEMU can hold up, plus the
//     short list of transient domains) for the cache's catch-up: RESTORED,
//     then synthetic events for what changed while nobody was listening;
//   - then waits: a close (callback, keepalive) or a dead connection starts
//     over; a drift the cache confirms re-lists on the same connection.
//
// A stalled or dead event connection never holds up the call connections
// (they are the pool's, opened on its own thread), and the reverse.
//
// Thread-safe.
#pragma once

#include <cstdint>

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "server/libvirt/connector.h"
#include "server/libvirt/domain_reads.h"
#include "server/libvirt/host_info_reader.h"
#include "server/state/domain_cache.h"

namespace virtgate {

class LifecycleFeed {
 public:
  struct Options {
    ConnectOptions connect;
    absl::Duration initial_backoff = absl::Milliseconds(200);
    absl::Duration max_backoff = absl::Seconds(30);
    // How often the thread checks liveness and drift on its own.
    absl::Duration check_interval = absl::Seconds(1);
  };

  // Starts the thread, which connects at once. libvirt's event loop must be
  // running (ConnectionPool::Create starts it).
  static std::unique_ptr<LifecycleFeed> Start(Options options, std::shared_ptr<DomainCache> cache,
                                              std::shared_ptr<HostFacts> host,
                                              std::shared_ptr<DomainReads> reads,
                                              std::shared_ptr<ReconnectSignal> reconnect);
  ~LifecycleFeed();  // Shutdown()

  // Waits until the first attempt to connect (and list) ended, or
  // `deadline`. True if it did.
  bool WaitForFirstAttempt(absl::Time deadline);

  // Why the event connection is down; empty while it is up.
  std::string last_error() const;
  // Event connections set up again after the first.
  uint64_t reconnects() const;

  // Stops the thread and closes the connection, waiting until `deadline`
  // (at least 200ms): a thread or a close stuck in a stalled libvirtd is
  // abandoned. Idempotent.
  void Shutdown(absl::Time deadline = absl::InfiniteFuture());

 private:
  class Core;
  explicit LifecycleFeed(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  std::shared_ptr<Core> core_;
};

}  // namespace virtgate
