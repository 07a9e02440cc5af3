// Authorizer: decides, per call on a TLS listener, whether the client's
// certificate identity may call the method, by an AuthzPolicy (gRFC A43
// format) read from --authz_policy and re-read when the file changes (a bad
// new file is logged and the last good policy kept). Without a file, the
// built-in policy lets any client call the read methods only, so allowing
// anything else (future actions on domains) is an explicit decision.
//
// Health (grpc.health.v1) and reflection are always allowed: probes and
// grpcurl need them, and they reveal no domain.
//
// It runs as gRPC's AuthMetadataProcessor, inline on the call's thread; a
// denial is PERMISSION_DENIED. Denials are logged once per identity and
// method, not per call. gRPC calls the processor only on secure listeners:
// plaintext has no identity, so Server refuses --authz_policy without TLS.
#pragma once

#include <grpcpp/security/auth_metadata_processor.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/rpc/authz_policy.h"

namespace virtgate {

// The built-in policy: read methods for every client.
extern const char kDefaultAuthzPolicy[];

class Authorizer : public grpc::AuthMetadataProcessor {
 public:
  struct Options {
    std::string policy_file;  // empty: kDefaultAuthzPolicy, never reloaded
    absl::Duration refresh_interval = absl::Seconds(60);
  };
  // Fails (naming the file and the field) if the policy cannot be read or
  // parsed: a server must not start with rules it cannot apply.
  static absl::StatusOr<std::shared_ptr<Authorizer>> Create(Options options);
  ~Authorizer() override;  // stops watching the file

  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

  // The policy's "name" now in force.
  std::string policy_name() const;

 private:
  explicit Authorizer(Options options, AuthzPolicy policy, std::string text);
  void Watch();
  void LogDenialOnce(const std::string& identity, const std::string& path,
                     const std::string& rule);

  const Options options_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const AuthzPolicy> policy_ ABSL_GUARDED_BY(mu_);
  std::string text_ ABSL_GUARDED_BY(mu_);  // the file's content in force
  absl::flat_hash_set<std::string> logged_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watcher_;
};

}  // namespace virtgate
