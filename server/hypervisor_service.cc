#include "server/hypervisor_service.h"

#include "server/host_info_reader.h"
#include "server/unary_call.h"

namespace virtgate {
namespace {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
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
        return lister->List(lease->get(), req);
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
        return lister->Get(lease->get(), req);
      });
}

namespace {

// The parts of HostInfo that come from virtgated itself, not libvirt.
void FillServerSide(const ConnectionPool& pool, v1::HostInfo* info) {
  const ConnectionPool::Snapshot snap = pool.GetSnapshot();
  v1::ConnectionInfo* c = info->mutable_connection();
  c->set_up(snap.up());
  c->set_connections_up(snap.connections_up);
  c->set_connections_total(snap.connections_total);
  c->set_last_error(snap.last_error);
  c->set_read_only(pool.options().read_only);
  info->set_uri(pool.options().uri);
  info->set_server_version(VIRTGATE_VERSION);
}

}  // namespace

grpc::ServerUnaryReactor* HypervisorService::GetHostInfo(grpc::CallbackServerContext* ctx,
                                                         const v1::GetHostInfoRequest*,
                                                         v1::HostInfo* response) {
  // Unreachable libvirt is not an error here: the answer says so, at once,
  // without queueing behind libvirt work.
  if (!connections_->GetSnapshot().up()) {
    FillServerSide(*connections_, response);
    return FinishNow(ctx, absl::OkStatus());
  }
  return UnaryCall<v1::HostInfo>::Start(
      ctx, response, workers_,
      [pool = connections_](absl::Time deadline) -> absl::StatusOr<v1::HostInfo> {
        v1::HostInfo info;
        absl::StatusOr<ConnectionPool::Lease> lease = pool->Acquire(deadline);
        if (lease.ok()) {
          absl::StatusOr<v1::HostInfo> read = ReadHostInfo(lease->get());
          if (!read.ok() && read.status().code() != absl::StatusCode::kUnavailable) {
            return read.status();
          }
          if (read.ok()) info = *std::move(read);
        } else if (lease.status().code() != absl::StatusCode::kUnavailable) {
          return lease.status();
        }
        FillServerSide(*pool, &info);
        return info;
      });
}

grpc::ServerWriteReactor<v1::WatchLifecycleResponse>* HypervisorService::WatchLifecycle(
    grpc::CallbackServerContext* ctx, const v1::WatchLifecycleRequest* request) {
  return WatchReactor::Start(ctx, *request, WatchDeps{hub_, workers_, connections_, lister_, timers_},
                             &watches_);
}

}  // namespace virtgate
