#include "server/rpc/health_service.h"

#include <optional>
#include <utility>
#include <vector>

namespace virtgate {

// One Watch stream. The service queues statuses into it under its own lock
// and "kicks" it outside that lock, since gRPC may run a reaction inline
// from StartWrite or Finish. A kick holds a pin, so the reactor outlives
// every kick in progress even if gRPC is done with it meanwhile.
class HealthService::Watcher final : public grpc::ServerWriteReactor<Response> {
 public:
  Watcher(HealthService* service, std::string name) : service_(service), name_(std::move(name)) {}

  const std::string& name() const { return name_; }

  // Under the service's lock: the latest status to send, and whether the
  // stream ends after it. Pins the reactor until the Kick that follows.
  void Queue(Response::ServingStatus status, bool end) {
    absl::MutexLock lock(&mu_);
    pending_ = status;
    end_ = end_ || end;
    ++pins_;
  }

  // Outside the service's lock, after Queue: writes or finishes as due.
  void Kick() {
    Act();
    Unpin();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) end_ = true;  // the stream broke: nothing more to send
      if (!ok) pending_.reset();
    }
    Act();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      end_ = true;
      pending_.reset();
      cancelled_ = true;
    }
    Act();
  }

  void OnDone() override {
    service_->Remove(this);
    bool last;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      last = pins_ == 0;
    }
    if (last) delete this;
  }

 private:
  // Starts the next write, or the finish, if one is due and none is running.
  void Act() {
    enum { kNothing, kWrite, kFinish } action = kNothing;
    bool cancelled = false;
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finished_) return;
      if (pending_.has_value()) {
        out_.set_status(*pending_);
        pending_.reset();
        writing_ = true;
        action = kWrite;
      } else if (end_) {
        finished_ = true;
        cancelled = cancelled_;
        action = kFinish;
      }
    }
    if (action == kWrite) StartWrite(&out_);
    if (action == kFinish) {
      Finish(cancelled ? grpc::Status::CANCELLED
                       : grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down"));
    }
  }

  void Unpin() {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      last = --pins_ == 0 && done_;
    }
    if (last) delete this;
  }

  HealthService* const service_;
  const std::string name_;
  absl::Mutex mu_;
  Response out_;  // the write in flight (only one at a time)
  std::optional<Response::ServingStatus> pending_ ABSL_GUARDED_BY(mu_);
  bool end_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  int pins_ ABSL_GUARDED_BY(mu_) = 0;
};

HealthService::HealthService() { statuses_[""] = Response::NOT_SERVING; }

HealthService::Response::ServingStatus HealthService::StatusLocked(
    const std::string& service) const {
  auto it = statuses_.find(service);
  return it == statuses_.end() ? Response::SERVICE_UNKNOWN : it->second;
}

void HealthService::SetServingStatus(const std::string& service, bool serving) {
  std::vector<Watcher*> kick;
  {
    absl::MutexLock lock(&mu_);
    const Statuses before = statuses_;
    if (!shut_down_) statuses_[service] = serving ? Response::SERVING : Response::NOT_SERVING;
    kick = QueueChangesLocked(before, false);
  }
  for (Watcher* w : kick) w->Kick();
}

void HealthService::SetServingStatus(bool serving) {
  std::vector<Watcher*> kick;
  {
    absl::MutexLock lock(&mu_);
    const Statuses before = statuses_;
    if (!shut_down_) {
      for (auto& entry : statuses_) entry.second = serving ? Response::SERVING : Response::NOT_SERVING;
    }
    kick = QueueChangesLocked(before, false);
  }
  for (Watcher* w : kick) w->Kick();
}

void HealthService::Shutdown() {
  std::vector<Watcher*> kick;
  {
    absl::MutexLock lock(&mu_);
    const Statuses before = statuses_;
    for (auto& entry : statuses_) entry.second = Response::NOT_SERVING;
    shut_down_ = true;
    kick = QueueChangesLocked(before, true);
  }
  for (Watcher* w : kick) w->Kick();
}

std::vector<HealthService::Watcher*> HealthService::QueueChangesLocked(const Statuses& before,
                                                                      bool end) {
  std::vector<Watcher*> kick;
  for (Watcher* w : watchers_) {
    const Response::ServingStatus now = StatusLocked(w->name());
    auto was = before.find(w->name());
    const Response::ServingStatus prev =
        was == before.end() ? Response::SERVICE_UNKNOWN : was->second;
    if (!end && prev == now) continue;
    w->Queue(now, end);
    kick.push_back(w);
  }
  return kick;
}

void HealthService::Remove(Watcher* watcher) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(watcher);
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* ctx,
                                               const grpc::health::v1::HealthCheckRequest* request,
                                               Response* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  Response::ServingStatus status;
  {
    absl::MutexLock lock(&mu_);
    status = StatusLocked(request->service());
  }
  if (status == Response::SERVICE_UNKNOWN) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service"));
  } else {
    response->set_status(status);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::ServerWriteReactor<HealthService::Response>* HealthService::Watch(
    grpc::CallbackServerContext*, const grpc::health::v1::HealthCheckRequest* request) {
  auto* watcher = new Watcher(this, request->service());
  {
    absl::MutexLock lock(&mu_);
    watchers_.insert(watcher);
    watcher->Queue(StatusLocked(request->service()), shut_down_);
  }
  watcher->Kick();
  return watcher;
}

}  // namespace virtgate
