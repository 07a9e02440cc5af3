#include "server/hypervisor_service.h"

#include "absl/strings/str_cat.h"
#include "server/unary_call.h"

namespace virtgate {
namespace {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

// A call that failed because its connection died (libvirtd killed or
// restarted under it) fails as UNAVAILABLE, whatever libvirt called the
// error ("End of file while reading data", "client socket is closed", ...):
// retrying is right, and the client must not mistake it for a bad request.
template <typename T>
absl::StatusOr<T> WhileAlive(absl::StatusOr<T> result, const ConnectionPool::Lease& lease,
                             const ConnectionPool& pool) {
  if (result.ok() || result.status().code() == absl::StatusCode::kUnavailable ||
      virConnectIsAlive(lease.get()) == 1) {
    return result;
  }
  return absl::UnavailableError(absl::StrCat("hypervisor unavailable: ", pool.options().uri,
                                             ": connection lost during the call (",
                                             result.status().message(), ")"));
}

}  // namespace

grpc::ServerUnaryReactor* HypervisorService::ListDomains(grpc::CallbackServerContext* ctx,
                                                         const v1::ListDomainsRequest* request,
                                                         v1::ListDomainsResponse* response) {
  if (absl::Status s = DomainLister::ValidateListRequest(*request); !s.ok()) {
    return FinishNow(ctx, s);
  }
  return UnaryCall<v1::ListDomainsResponse>::Start(
      ctx, response, workers_,
      [pool = connections_, lister = lister_,
       req = *request](absl::Time deadline) -> absl::StatusOr<v1::ListDomainsResponse> {
        absl::StatusOr<ConnectionPool::Lease> lease = pool->Acquire(deadline);
        if (!lease.ok()) return lease.status();
        return WhileAlive(lister->List(lease->get(), req, deadline), *lease, *pool);
      });
}

grpc::ServerUnaryReactor* HypervisorService::GetDomain(grpc::CallbackServerContext* ctx,
                                                       const v1::GetDomainRequest* request,
                                                       v1::Domain* response) {
  if (absl::Status s = DomainLister::ValidateGetRequest(*request); !s.ok()) {
    return FinishNow(ctx, s);
  }
  return UnaryCall<v1::Domain>::Start(
      ctx, response, workers_,
      [pool = connections_, lister = lister_,
       req = *request](absl::Time deadline) -> absl::StatusOr<v1::Domain> {
        absl::StatusOr<ConnectionPool::Lease> lease = pool->Acquire(deadline);
        if (!lease.ok()) return lease.status();
        return WhileAlive(lister->Get(lease->get(), req, deadline), *lease, *pool);
      });
}

grpc::ServerUnaryReactor* HypervisorService::GetHostInfo(grpc::CallbackServerContext* ctx,
                                                         const v1::GetHostInfoRequest*,
                                                         v1::HostInfo* response) {
  // From memory, never behind libvirt work: answers while libvirt is down
  // or stalled, which is when it is wanted most.
  if (std::optional<v1::HostInfo> facts = host_facts_->Get()) *response = *std::move(facts);
  const ConnectionPool::Snapshot snap = connections_->GetSnapshot();
  const WorkerPool::Stats workers = workers_->GetStats();
  v1::ConnectionInfo* c = response->mutable_connection();
  c->set_up(snap.up());
  c->set_connections_up(snap.connections_up);
  c->set_connections_total(snap.connections_total);
  c->set_last_error(snap.last_error);
  c->set_read_only(connections_->options().read_only);
  c->set_calls_in_flight(snap.in_flight);
  c->set_stuck_calls(workers.stuck);
  c->set_replacement_workers(workers.replacements);
  c->set_events_up(!mirror_->GetStats().lost && snap.up());
  for (const std::string& uuid : lister_->busy().Busy()) c->add_busy_domains(uuid);
  response->set_uri(connections_->options().uri);
  response->set_server_version(VIRTGATE_VERSION);
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerWriteReactor<v1::WatchLifecycleResponse>* HypervisorService::WatchLifecycle(
    grpc::CallbackServerContext* ctx, const v1::WatchLifecycleRequest* request) {
  return WatchReactor::Start(ctx, *request, WatchDeps{hub_, workers_, connections_, lister_, timers_},
                             &watches_);
}

}  // namespace virtgate
