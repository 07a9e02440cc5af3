#include "server/rpc/health_listener.h"

#include <unistd.h>

#include "server/rpc/without_reflection.h"

namespace virtgate {

absl::StatusOr<std::unique_ptr<HealthListener>> HealthListener::Start(
    const ListenAddress& address, const ConnectionLimits& limits) {
  std::unique_ptr<HealthListener> listener(new HealthListener());
  grpc::ServerBuilder builder;
  ApplyConnectionLimits(limits, &builder);
  builder.RegisterService(listener->service_.get());
  // Reflection's plugin is registered for every server of the process.
  builder.SetOption(std::make_unique<WithoutReflection>());
  absl::StatusOr<Listening> listening =
      StartListening(address, grpc::InsecureServerCredentials(), &builder);
  if (!listening.ok()) return listening.status();
  listener->server_ = std::move(listening->server);
  listener->address_ = std::move(listening->address);
  listener->lock_fd_ = listening->lock_fd;
  return listener;
}

void HealthListener::Shutdown(absl::Time deadline) {
  if (shut_down_ || !server_) return;  // !server_: Start failed
  shut_down_ = true;
  service_->Shutdown();  // NOT_SERVING; ends watches, which would hold the server
  server_->Shutdown(absl::ToChronoTime(deadline));
  server_->Wait();
}

HealthListener::~HealthListener() {
  Shutdown(absl::Now());
  if (lock_fd_ >= 0) close(lock_fd_);
}

}  // namespace virtgate
