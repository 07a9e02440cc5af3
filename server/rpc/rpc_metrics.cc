#include "server/rpc/rpc_metrics.h"

#include <grpcpp/support/interceptor.h>

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "server/metrics/code_label.h"

namespace virtgate {
namespace {

using grpc::experimental::InterceptionHookPoints;

// Every call of a method no service registered.
constexpr char kUnknownMethod[] = "/unknown/unknown";
using grpc::experimental::ServerRpcInfo;

const char* TypeLabel(ServerRpcInfo::Type type) {
  switch (type) {
    case ServerRpcInfo::Type::UNARY: return "unary";
    case ServerRpcInfo::Type::CLIENT_STREAMING: return "client_stream";
    case ServerRpcInfo::Type::SERVER_STREAMING: return "server_stream";
    case ServerRpcInfo::Type::BIDI_STREAMING: return "bidi_stream";
  }
  return "unary";
}

// One per call: started when gRPC creates it, handled when the call sends its
// status, or (never having sent one: the client went away first) as
// CANCELLED when gRPC destroys it.
class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(std::shared_ptr<RpcMetrics> metrics, std::string method, const char* type)
      : metrics_(std::move(metrics)), method_(std::move(method)), type_(type),
        start_(absl::Now()) {
    metrics_->Started(method_, type_);
  }
  ~MetricsInterceptor() override {
    if (!handled_) Handle(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Handle(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Handle(int code) {
    if (handled_) return;
    handled_ = true;
    metrics_->Handled(method_, type_, code, absl::Now() - start_);
  }

  const std::shared_ptr<RpcMetrics> metrics_;
  const std::string method_;
  const char* const type_;
  const absl::Time start_;
  bool handled_ = false;  // gRPC calls one interceptor from one thread at a time
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  MetricsInterceptorFactory(std::shared_ptr<RpcMetrics> metrics,
                            std::vector<std::string> handler_reported)
      : metrics_(std::move(metrics)),
        handler_reported_(handler_reported.begin(), handler_reported.end()) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(ServerRpcInfo* info) override {
    const std::string method = info->method() ? info->method() : "";
    // None at all: gRPC then runs the call's batches without interception.
    if (handler_reported_.contains(method)) return nullptr;
    return new MetricsInterceptor(metrics_, method, TypeLabel(info->type()));
  }

 private:
  const std::shared_ptr<RpcMetrics> metrics_;
  const absl::flat_hash_set<std::string> handler_reported_;
};

// "/virtgate.v1.Hypervisor/ListDomains" -> ("virtgate.v1.Hypervisor", "ListDomains").
std::pair<absl::string_view, absl::string_view> SplitMethod(absl::string_view full) {
  if (!full.empty() && full.front() == '/') full.remove_prefix(1);
  const size_t slash = full.rfind('/');
  if (slash == absl::string_view::npos) return {"", full};
  return {full.substr(0, slash), full.substr(slash + 1)};
}

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
RpcMetrics::InterceptorFactory(std::shared_ptr<RpcMetrics> metrics,
                               std::vector<std::string> handler_reported) {
  return std::make_unique<MetricsInterceptorFactory>(std::move(metrics),
                                                     std::move(handler_reported));
}

void RpcMetrics::Preregister(const google::protobuf::ServiceDescriptor& service) {
  absl::MutexLock lock(&mu_);
  for (int i = 0; i < service.method_count(); ++i) {
    const google::protobuf::MethodDescriptor& m = *service.method(i);
    Method& entry = methods_[absl::StrCat("/", service.full_name(), "/", m.name())];
    entry.type = m.client_streaming()
                     ? (m.server_streaming() ? "bidi_stream" : "client_stream")
                     : (m.server_streaming() ? "server_stream" : "unary");
    for (int code = 0; code <= static_cast<int>(grpc::StatusCode::UNAUTHENTICATED); ++code) {
      entry.handled.emplace(code, 0);
    }
  }
}

RpcMetrics::Method& RpcMetrics::FindLocked(const std::string& method) {
  auto it = methods_.find(method);
  return it != methods_.end() ? it->second : methods_[kUnknownMethod];
}

void RpcMetrics::Started(const std::string& method, const char* type) {
  absl::MutexLock lock(&mu_);
  Method& m = FindLocked(method);
  m.type = type;
  ++m.started;
}

void RpcMetrics::Handled(const std::string& method, const char* type, int code,
                         absl::Duration took) {
  // gRPC's codes are 0..16; anything else would be a second "Unknown".
  if (code < 0 || code > static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)) {
    code = static_cast<int>(grpc::StatusCode::UNKNOWN);
  }
  absl::MutexLock lock(&mu_);
  Method& m = FindLocked(method);
  ++m.handled[code];
  if (absl::string_view(type) == "unary") m.latency.Observe(took);
}

uint64_t RpcMetrics::HandledCount(const std::string& method, int code) const {
  absl::MutexLock lock(&mu_);
  auto it = methods_.find(method);
  if (it == methods_.end()) return 0;
  auto n = it->second.handled.find(code);
  return n == it->second.handled.end() ? 0 : n->second;
}

void RpcMetrics::Write(Exposition* out) const {
  absl::MutexLock lock(&mu_);
  out->Family("grpc_server_started_total", "RPCs started on the server.",
              Exposition::Type::kCounter);
  for (const auto& [method, m] : methods_) {
    const auto [service, name] = SplitMethod(method);
    out->Sample("grpc_server_started_total",
                {{"grpc_type", m.type}, {"grpc_service", service}, {"grpc_method", name}},
                static_cast<double>(m.started));
  }
  out->Family("grpc_server_handled_total",
              "RPCs completed on the server, by status code (a stream when it ends).",
              Exposition::Type::kCounter);
  for (const auto& [method, m] : methods_) {
    const auto [service, name] = SplitMethod(method);
    for (const auto& [code, n] : m.handled) {
      out->Sample("grpc_server_handled_total",
                  {{"grpc_type", m.type},
                   {"grpc_service", service},
                   {"grpc_method", name},
                   {"grpc_code", CodeLabel(code)}},
                  static_cast<double>(n));
    }
  }
  out->Family("grpc_server_handling_seconds",
              "Time from the start of a unary RPC to its status being sent.",
              Exposition::Type::kHistogram);
  for (const auto& [method, m] : methods_) {
    if (absl::string_view(m.type) != "unary") continue;
    const auto [service, name] = SplitMethod(method);
    out->Histogram("grpc_server_handling_seconds",
                   {{"grpc_type", m.type}, {"grpc_service", service}, {"grpc_method", name}},
                   LatencyHistogram::Bounds(), m.latency.counts(), m.latency.sum_seconds());
  }
}

}  // namespace virtgate
