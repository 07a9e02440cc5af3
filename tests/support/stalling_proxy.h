// StallingProxy: a fake, for what no real part can do on demand: stall one
// libvirt connection while every other goes on. It listens on a unix socket
// of its own and forwards each connection to libvirtd's socket, byte for
// byte. While holding, a connection that sends libvirt's lifecycle event
// registration (what virtgated's event connection does right after it
// connects) is held right there: the call reaches libvirtd, but nothing
// more passes either way until Release(). libvirtd, the test driver and
// virtgated are the real ones; only the wire between them is stopped.
//
// The same fake wire, plain (any bytes), sits between a gRPC client and
// virtgated's unix socket to drop connections on demand (DropAll) and keep
// refusing new ones for a while (Refuse): what a network does to a client.
//
// Thread-safe. Its thread stops (closing every connection) on destruction.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace virtgate::testing {

class StallingProxy {
 public:
  // Listens on `listen_path`, forwarding to the libvirtd socket `target_path`.
  static absl::StatusOr<std::unique_ptr<StallingProxy>> Start(const std::string& target_path,
                                                              const std::string& listen_path,
                                                              bool plain = false);
  // Forwards any bytes (e.g. gRPC to virtgated's unix socket), never holding
  // them: for DropAll and Refuse only.
  static absl::StatusOr<std::unique_ptr<StallingProxy>> StartPlain(
      const std::string& target_path, const std::string& listen_path);
  ~StallingProxy();

  // Closes every connection, both ways (a network that dropped them);
  // returns once they are closed.
  void DropAll();
  // While true, new connections are accepted and closed at once.
  void Refuse(bool refuse);

  // From now on, hold the connections that register for lifecycle events.
  void HoldEventConnections();
  // Held connections flow again; new ones are not held.
  void Release();
  // Connections held now.
  int held() const;

 private:
  struct State;
  explicit StallingProxy(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
  std::thread thread_;
};

}  // namespace virtgate::testing
