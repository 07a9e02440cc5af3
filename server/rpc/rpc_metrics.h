// RpcMetrics: what every gRPC call virtgated served did, recorded by gRPC's
// server interceptor API (RpcMetrics::InterceptorFactory) rather than in
// each handler: calls started and handled by method and status code, time
// to handle unary calls, calls in progress. The names and labels follow
// grpc-ecosystem/go-grpc-prometheus (grpc_server_handled_total{grpc_type,
// grpc_service, grpc_method, grpc_code}, ...), so existing gRPC dashboards
// and alerts work on them. Thread-safe.
//
// Except for the methods given to InterceptorFactory as handler-reported:
// their handlers call Started and Handled themselves. An interceptor makes
// gRPC 1.51 take every batch of its call through the completion queue twice
// (after the post-hooks it re-posts the tag with an empty batch), so on a
// server-streaming call with many messages (WatchLifecycle) it costs a
// second completion per message: a third of the completions of a watch
// fan-out, each of them O(open calls) in Debian's libgrpc (built without
// NDEBUG, grpc_cq_end_op searches a list of every outstanding tag).
#pragma once

#include <google/protobuf/descriptor.h>
#include <grpcpp/support/server_interceptor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/metrics/exposition.h"
#include "server/metrics/latency_histogram.h"

namespace virtgate {

class RpcMetrics {
 public:
  // A factory for ServerBuilder::experimental().SetInterceptorCreators:
  // every call's interceptor reports to `metrics`; calls of the
  // `handler_reported` methods ("/package.Service/Method") get none.
  static std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory(
      std::shared_ptr<RpcMetrics> metrics, std::vector<std::string> handler_reported = {});

  // Every method of `service` with zero calls of each status code, so that a
  // code's first call is an increase Prometheus's rate() sees (a series
  // that appears at 1 is not), as go-grpc-prometheus does. Only registered
  // methods are counted by name: a call of any other (a client can send
  // any path; gRPC answers UNIMPLEMENTED) counts as grpc_service and
  // grpc_method "unknown", so clients cannot add series.
  void Preregister(const google::protobuf::ServiceDescriptor& service);

  // "/virtgate.v1.Hypervisor/ListDomains", "unary" (or "server_stream", ...).
  void Started(const std::string& method, const char* type);
  // With the call's status code; `took` is recorded for unary calls only (a
  // watch stream's lifetime is not a latency).
  void Handled(const std::string& method, const char* type, int code, absl::Duration took);

  // Writes the grpc_server_* families.
  void Write(Exposition* out) const;

  // Handled calls of `method` that ended with `code` (tests).
  uint64_t HandledCount(const std::string& method, int code) const;

 private:
  struct Method {
    const char* type = "unary";
    uint64_t started = 0;
    std::map<int, uint64_t> handled;  // by code
    LatencyHistogram latency;
  };

  // `method`'s entry, or the one of every unregistered method.
  Method& FindLocked(const std::string& method) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Method> methods_ ABSL_GUARDED_BY(mu_);
};

}  // namespace virtgate
