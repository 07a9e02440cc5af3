// HypervisorService: the virtgate.v1.Hypervisor gRPC service (callback API).
//
// A thin edge: validates what needs no libvirt on the gRPC thread, hands the
// rest to the WorkerPool (UnaryCall), and converts statuses once, here.
#pragma once

#include <string>

#include "server/connection_pool.h"
#include "server/domain_lister.h"
#include "server/worker_pool.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {

class HypervisorService final : public v1::Hypervisor::CallbackService {
 public:
  // Borrows all three; they must outlive the gRPC server.
  HypervisorService(WorkerPool* workers, ConnectionPool* connections, DomainLister* lister)
      : workers_(workers), connections_(connections), lister_(lister) {}

  grpc::ServerUnaryReactor* ListDomains(grpc::CallbackServerContext* ctx,
                                        const v1::ListDomainsRequest* request,
                                        v1::ListDomainsResponse* response) override;
  grpc::ServerUnaryReactor* GetDomain(grpc::CallbackServerContext* ctx,
                                      const v1::GetDomainRequest* request,
                                      v1::Domain* response) override;
  grpc::ServerUnaryReactor* GetHostInfo(grpc::CallbackServerContext* ctx,
                                        const v1::GetHostInfoRequest* request,
                                        v1::HostInfo* response) override;
  grpc::ServerWriteReactor<v1::WatchLifecycleResponse>* WatchLifecycle(
      grpc::CallbackServerContext* ctx, const v1::WatchLifecycleRequest* request) override;

 private:
  v1::ConnectionInfo ConnectionState() const;

  WorkerPool* const workers_;
  ConnectionPool* const connections_;
  DomainLister* const lister_;
};

}  // namespace virtgate
