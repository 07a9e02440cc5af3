// Fuzzes the authorization policy parser (server/rpc/authz_policy.h), which
// reads --authz_policy files in gRFC A43's format, and its evaluation:
// - any bytes as a policy: refused with INVALID_ARGUMENT and a short,
//   one-line message, or parsed;
// - a parsed policy judges calls made from the rest of the input (identity,
//   method, headers) without crashing, and a denial names its rule.
#include <cstddef>
#include <cstdint>
#include <string>

#include <fuzzer/FuzzedDataProvider.h>

#include "absl/strings/match.h"
#include "server/rpc/authz_policy.h"
#include "tests/fuzz/fuzz_check.h"

namespace virtgate {
namespace {

using fuzz::Require;

CallFacts CallFrom(FuzzedDataProvider& data) {
  CallFacts call;
  call.authenticated = data.ConsumeBool();
  call.uri_sans.push_back(data.ConsumeRandomLengthString(64));
  call.dns_sans.push_back(data.ConsumeRandomLengthString(64));
  call.subject = data.ConsumeRandomLengthString(64);
  call.path = data.ConsumeRandomLengthString(64);
  call.headers.emplace_back(data.ConsumeRandomLengthString(16), data.ConsumeRandomLengthString(32));
  return call;
}

}  // namespace
}  // namespace virtgate

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  using namespace virtgate;
  FuzzedDataProvider data(bytes, size);
  const std::string policy_text = data.ConsumeRandomLengthString(size);
  absl::StatusOr<AuthzPolicy> policy = AuthzPolicy::Parse(policy_text);
  if (!policy.ok()) {
    Require(policy.status().code() == absl::StatusCode::kInvalidArgument,
            "a bad policy is INVALID_ARGUMENT");
    // It is logged and printed at start: short enough to read.
    Require(policy.status().message().size() <= 2048, "a bad policy's message is short");
    return 0;
  }
  for (int i = 0; i < 4 && data.remaining_bytes() > 0; ++i) {
    const AuthzPolicy::Decision d = policy->Evaluate(CallFrom(data));
    Require(d.allowed ? absl::StartsWith(d.rule, "allow_rules[")
                      : (absl::StartsWith(d.rule, "deny_rules[") || d.rule == "no allow rule"),
            "a decision names the rule that made it");
  }
  return 0;
}
