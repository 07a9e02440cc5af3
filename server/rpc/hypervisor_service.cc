#include "server/rpc/hypervisor_service.h"

#include "absl/strings/str_cat.h"
#include "server/rpc/unary_call.h"

namespace virtgate {
namespace {

// Answers at once, on the gRPC thread: `result` needs no libvirt.
template <typename T>
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, absl::StatusOr<T> result,
                                    T* response) {
  if (result.ok()) *response = *std::move(result);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(result.status()));
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* HypervisorService::ListDomains(grpc::CallbackServerContext* ctx,
                                                         const v1::ListDomainsRequest* request,
                                                         v1::ListDomainsResponse* response) {
  absl::StatusOr<ListQuery> query =
      ParseListRequest(*request, deps_.limits, *deps_.page_tokens, absl::Now());
  if (!query.ok()) return FinishNow<v1::ListDomainsResponse>(ctx, query.status(), response);
  if (query->cached) return FinishNow(ctx, deps_.lister->ListCached(*query), response);
  return UnaryCall<v1::ListDomainsResponse>::Start(
      ctx, response, deps_.calls,
      [lister = deps_.lister, q = *std::move(query)](absl::Time deadline) {
        return lister->ListFresh(q, deadline);
      });
}

grpc::ServerUnaryReactor* HypervisorService::GetDomain(grpc::CallbackServerContext* ctx,
                                                       const v1::GetDomainRequest* request,
                                                       v1::Domain* response) {
  absl::StatusOr<GetQuery> query = ParseGetRequest(*request);
  if (!query.ok()) return FinishNow<v1::Domain>(ctx, query.status(), response);
  if (query->cached) return FinishNow(ctx, deps_.lister->GetCached(*query), response);
  return UnaryCall<v1::Domain>::Start(
      ctx, response, deps_.calls,
      [lister = deps_.lister, q = *std::move(query)](absl::Time deadline) {
        return lister->GetFresh(q, deadline);
      });
}

grpc::ServerUnaryReactor* HypervisorService::GetHostInfo(grpc::CallbackServerContext* ctx,
                                                         const v1::GetHostInfoRequest*,
                                                         v1::HostInfo* response) {
  // From memory, never behind libvirt work: answers while libvirt is down
  // or stalled, which is when it is wanted most.
  v1::HostInfo info;
  if (std::optional<v1::HostInfo> facts = deps_.host->Get()) info = *std::move(facts);
  const ConnectionPool::Snapshot pool = deps_.pool->GetSnapshot();
  const WorkerPool::Stats workers = deps_.calls.workers->GetStats();
  const DomainCache::Stats cache = deps_.cache->GetStats();
  v1::ConnectionInfo* c = info.mutable_connection();
  c->set_up(pool.up());
  c->set_connections_up(pool.connections_up);
  c->set_connections_total(pool.connections_total);
  c->set_last_error(pool.last_error);
  c->set_read_only(deps_.pool->options().connect.read_only);
  c->set_calls_in_flight(pool.in_flight);
  c->set_stuck_calls(workers.stuck + deps_.stats->stuck_calls());
  c->set_replacement_workers(workers.replacements);
  c->set_events_up(cache.current);
  if (!cache.current) c->set_events_error(deps_.feed->last_error());
  c->set_last_sequence(cache.sequence);
  c->set_epoch(deps_.cache->epoch());
  c->set_domains(static_cast<uint32_t>(cache.domains));
  c->set_drift_resyncs(cache.drift_resyncs);
  c->set_open_watches(static_cast<uint32_t>(watches_.size()));
  for (const std::string& uuid : deps_.stats->busy().Busy()) c->add_busy_domains(uuid);
  info.set_uri(deps_.pool->options().connect.uri);
  info.set_server_version(VIRTGATE_VERSION);
  return FinishNow(ctx, absl::StatusOr<v1::HostInfo>(std::move(info)), response);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* HypervisorService::WatchLifecycle(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) {
  return WatchReactor::Start(
      ctx, *request, WatchDeps{deps_.cache, deps_.hub, deps_.timers, deps_.rpc_metrics}, &watches_);
}

}  // namespace virtgate
