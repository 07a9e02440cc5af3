// AuthzPolicy: a gRPC authorization policy in gRFC A43's JSON format
// ("name", "deny_rules", "allow_rules"; each rule a "name", an optional
// "source": {"principals": [...]} and an optional "request": {"paths":
// [...], "headers": [{"key", "values"}]}), parsed once and evaluated per
// call.
//
// gRPC 1.51 has this as FileWatcherAuthorizationPolicyProvider, but
// Debian's build leaves it out (libgrpc has no
// grpc_authorization_policy_provider_*_create), so the format and its
// semantics are reproduced here, following gRPC's rbac_translator:
//   - a value "abc" matches exactly, "abc*" by prefix, "*abc" by suffix,
//     "*" anything;
//   - a principal matches an authenticated (TLS) peer whose URI SANs, else
//     DNS SANs, else certificate subject ("CN=...,O=...") match;
//     no principals: any peer, with or without a certificate;
//   - deny rules first (any match denies), then allow rules (one must
//     match), else denied.
// Stricter than gRPC: an unknown field is an error (a typo such as
// "sources" would otherwise widen a rule to every peer).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace virtgate {

// What a call is judged on.
struct CallFacts {
  bool authenticated = false;  // came over TLS
  std::vector<std::string> uri_sans;
  std::vector<std::string> dns_sans;
  std::string subject;  // "CN=...,O=..."
  std::string path;     // "/virtgate.v1.Hypervisor/ListDomains"
  std::vector<std::pair<std::string, std::string>> headers;
};

class AuthzPolicy {
 public:
  // INVALID_ARGUMENT naming the field that is wrong.
  static absl::StatusOr<AuthzPolicy> Parse(absl::string_view json);

  struct Decision {
    bool allowed = false;
    std::string rule;  // "deny_rules[NAME]", "allow_rules[NAME]" or "no allow rule"
  };
  Decision Evaluate(const CallFacts& call) const;

  const std::string& name() const { return name_; }

  // A string match: exact, prefix ("abc*"), suffix ("*abc") or any ("*").
  struct Matcher {
    enum class Type { kExact, kPrefix, kSuffix } type = Type::kExact;
    std::string value;
    bool Matches(absl::string_view s) const;
  };
  struct HeaderRule {
    std::string key;
    std::vector<Matcher> values;  // one must match
  };
  struct Rule {
    std::string name;
    std::vector<Matcher> principals;  // empty: any peer
    std::vector<Matcher> paths;       // empty: any method
    std::vector<HeaderRule> headers;  // all must match
    bool Matches(const CallFacts& call) const;
  };

 private:
  std::string name_;
  std::vector<Rule> deny_;
  std::vector<Rule> allow_;
};

}  // namespace virtgate
