#include "server/rpc/authorizer.h"

#include <grpc/grpc_security_constants.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/base/log.h"
#include "server/base/quote.h"

namespace virtgate {

const char kDefaultAuthzPolicy[] = R"json({
  "name": "virtgate-default-read-only",
  "allow_rules": [{
    "name": "read",
    "request": {"paths": [
      "/virtgate.v1.Hypervisor/ListDomains",
      "/virtgate.v1.Hypervisor/GetDomain",
      "/virtgate.v1.Hypervisor/GetHostInfo",
      "/virtgate.v1.Hypervisor/WatchLifecycle"]}
  }]
})json";

namespace {

constexpr size_t kMaxLoggedDenials = 10000;

absl::StatusOr<std::string> ReadPolicyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read --authz_policy ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<AuthzPolicy> ParseFrom(const std::string& path, const std::string& text) {
  absl::StatusOr<AuthzPolicy> policy = AuthzPolicy::Parse(text);
  if (!policy.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--authz_policy ", path, ": ", policy.status().message()));
  }
  return policy;
}

std::vector<std::string> Values(const grpc::AuthContext& context, const char* property) {
  std::vector<std::string> out;
  for (const grpc::string_ref& v : context.FindPropertyValues(property)) {
    out.emplace_back(v.data(), v.size());
  }
  return out;
}

CallFacts FactsOf(const grpc::AuthMetadataProcessor::InputMetadata& metadata,
                  const grpc::AuthContext& context) {
  CallFacts call;
  // Only a verified client certificate is an identity (stricter than gRPC,
  // which counts any TLS connection as authenticated).
  call.authenticated = context.IsPeerAuthenticated();
  if (call.authenticated) {
    call.uri_sans = Values(context, GRPC_PEER_URI_PROPERTY_NAME);
    call.dns_sans = Values(context, GRPC_PEER_DNS_PROPERTY_NAME);
    std::vector<std::string> subject = Values(context, GRPC_X509_SUBJECT_PROPERTY_NAME);
    if (!subject.empty()) call.subject = subject.front();
  }
  for (const auto& [key, value] : metadata) {
    std::string k(key.data(), key.size());
    std::string v(value.data(), value.size());
    if (k == ":path") {
      call.path = std::move(v);
    } else {
      call.headers.emplace_back(std::move(k), std::move(v));
    }
  }
  return call;
}

// How logs and errors name the client: its first URI SAN, else DNS SAN,
// else subject.
std::string IdentityOf(const CallFacts& call) {
  if (!call.authenticated) return "a client without a certificate";
  if (!call.uri_sans.empty()) return call.uri_sans.front();
  if (!call.dns_sans.empty()) return call.dns_sans.front();
  return call.subject;
}

bool AlwaysAllowed(absl::string_view path) {
  return absl::StartsWith(path, "/grpc.health.v1.Health/") ||
         absl::StartsWith(path, "/grpc.reflection.v1alpha.ServerReflection/");
}

}  // namespace

absl::StatusOr<std::shared_ptr<Authorizer>> Authorizer::Create(Options options) {
  std::string text = kDefaultAuthzPolicy;
  if (!options.policy_file.empty()) {
    absl::StatusOr<std::string> read = ReadPolicyFile(options.policy_file);
    if (!read.ok()) return read.status();
    text = *std::move(read);
  }
  absl::StatusOr<AuthzPolicy> policy = ParseFrom(options.policy_file, text);
  if (!policy.ok()) return policy.status();
  return std::shared_ptr<Authorizer>(
      new Authorizer(std::move(options), *std::move(policy), std::move(text)));
}

Authorizer::Authorizer(Options options, AuthzPolicy policy, std::string text)
    : options_(std::move(options)),
      policy_(std::make_shared<const AuthzPolicy>(std::move(policy))),
      text_(std::move(text)) {
  LogInfo("authorization policy \"", policy_->name(), "\"",
          options_.policy_file.empty() ? " (built in: read methods only)"
                                       : absl::StrCat(" from ", options_.policy_file));
  if (!options_.policy_file.empty()) watcher_ = std::thread([this] { Watch(); });
}

Authorizer::~Authorizer() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
}

std::string Authorizer::policy_name() const {
  absl::MutexLock lock(&mu_);
  return policy_->name();
}

void Authorizer::Watch() {
  const std::string& path = options_.policy_file;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.refresh_interval)) return;
    }
    absl::StatusOr<std::string> text = ReadPolicyFile(path);
    absl::MutexLock lock(&mu_);
    if (!text.ok()) {
      LogWarning(text.status().message(), "; keeping policy \"", policy_->name(), "\"");
      continue;
    }
    if (*text == text_) continue;
    text_ = *text;  // a bad file is reported once, not at every look
    absl::StatusOr<AuthzPolicy> policy = ParseFrom(path, *text);
    if (!policy.ok()) {
      LogError(policy.status().message(), "; keeping policy \"", policy_->name(), "\"");
      continue;
    }
    policy_ = std::make_shared<const AuthzPolicy>(*std::move(policy));
    logged_.clear();  // new rules: their denials are news
    LogInfo("authorization policy \"", policy_->name(), "\" reloaded from ", path);
  }
}

grpc::Status Authorizer::Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                                 OutputMetadata* /*consumed*/, OutputMetadata* /*response*/) {
  const CallFacts call = FactsOf(auth_metadata, *context);
  if (AlwaysAllowed(call.path)) return grpc::Status::OK;
  std::shared_ptr<const AuthzPolicy> policy;
  {
    absl::MutexLock lock(&mu_);
    policy = policy_;
  }
  const AuthzPolicy::Decision decision = policy->Evaluate(call);
  if (decision.allowed) return grpc::Status::OK;
  const std::string identity = IdentityOf(call);
  LogDenialOnce(identity, call.path, absl::StrCat("policy \"", policy->name(), "\" ",
                                                  decision.rule));
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      BoundMessage(absl::StrCat(Quote(identity, 256), " may not call ",
                                                Quote(call.path, 256),
                                                " (virtgated's authorization policy)")));
}

void Authorizer::LogDenialOnce(const std::string& identity, const std::string& path,
                               const std::string& rule) {
  absl::MutexLock lock(&mu_);
  if (logged_.size() > kMaxLoggedDenials) return;
  if (logged_.size() == kMaxLoggedDenials) {
    logged_.insert("");
    LogWarning("authorization: ", kMaxLoggedDenials,
               " identity/method pairs denied; further denials are not logged");
    return;
  }
  if (!logged_.insert(absl::StrCat(identity, "\n", path)).second) return;
  LogWarning("authorization: denied ", Quote(identity, 256), " calling ", Quote(path, 256),
             " by ", rule, " (logged once per identity and method)");
}

}  // namespace virtgate
