#include "server/rpc/authz_policy.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <initializer_list>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "server/base/quote.h"

namespace virtgate {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

// Every key of `object` must be one of `known`.
absl::Status OnlyKnownFields(const Struct& object, absl::string_view where,
                             std::initializer_list<absl::string_view> known) {
  for (const auto& [key, value] : object.fields()) {
    bool found = false;
    for (absl::string_view k : known) found = found || key == k;
    if (!found) {
      return Invalid(where, absl::StrCat("unknown field ", Quote(key), " (known: ",
                                         absl::StrJoin(known, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

// The field `key` of `object` if present, else nullptr.
const Value* Field(const Struct& object, const std::string& key) {
  auto it = object.fields().find(key);
  return it == object.fields().end() ? nullptr : &it->second;
}

absl::StatusOr<AuthzPolicy::Matcher> ParseMatcher(const Value& value, absl::string_view where) {
  if (value.kind_case() != Value::kStringValue) return Invalid(where, "is not a string");
  absl::string_view s = value.string_value();
  AuthzPolicy::Matcher m;
  if (s == "*") {
    m.type = AuthzPolicy::Matcher::Type::kPrefix;
  } else if (absl::ConsumePrefix(&s, "*")) {
    m.type = AuthzPolicy::Matcher::Type::kSuffix;
  } else if (absl::ConsumeSuffix(&s, "*")) {
    m.type = AuthzPolicy::Matcher::Type::kPrefix;
  }
  if (s != "*") m.value = std::string(s);
  return m;
}

absl::StatusOr<std::vector<AuthzPolicy::Matcher>> ParseMatchers(const Value* list,
                                                                 const std::string& where) {
  std::vector<AuthzPolicy::Matcher> out;
  if (list == nullptr) return out;
  if (list->kind_case() != Value::kListValue) return Invalid(where, "is not an array");
  for (int i = 0; i < list->list_value().values_size(); ++i) {
    absl::StatusOr<AuthzPolicy::Matcher> m =
        ParseMatcher(list->list_value().values(i), absl::StrCat(where, "[", i, "]"));
    if (!m.ok()) return m.status();
    out.push_back(*std::move(m));
  }
  return out;
}

absl::StatusOr<AuthzPolicy::HeaderRule> ParseHeader(const Value& value, const std::string& where) {
  if (value.kind_case() != Value::kStructValue) return Invalid(where, "is not an object");
  const Struct& header = value.struct_value();
  if (absl::Status s = OnlyKnownFields(header, where, {"key", "values"}); !s.ok()) return s;
  const Value* key = Field(header, "key");
  if (key == nullptr || key->kind_case() != Value::kStringValue) {
    return Invalid(where, "\"key\" is missing or not a string");
  }
  AuthzPolicy::HeaderRule rule;
  rule.key = absl::AsciiStrToLower(key->string_value());
  // As gRPC: pseudo-headers, gRPC's own and host are not the policy's.
  if (rule.key.empty() || absl::StartsWith(rule.key, ":") || absl::StartsWith(rule.key, "grpc-") ||
      rule.key == "host") {
    return Invalid(where, absl::StrCat("unsupported \"key\" ", Quote(rule.key)));
  }
  const std::string values_where = absl::StrCat(where, ".values");
  absl::StatusOr<std::vector<AuthzPolicy::Matcher>> values =
      ParseMatchers(Field(header, "values"), values_where);
  if (!values.ok()) return values.status();
  if (values->empty()) return Invalid(values_where, "is missing or empty");
  rule.values = *std::move(values);
  return rule;
}

absl::Status ParseRequest(const Value& value, const std::string& where, AuthzPolicy::Rule* rule) {
  if (value.kind_case() != Value::kStructValue) return Invalid(where, "is not an object");
  const Struct& request = value.struct_value();
  if (absl::Status s = OnlyKnownFields(request, where, {"paths", "headers"}); !s.ok()) return s;
  absl::StatusOr<std::vector<AuthzPolicy::Matcher>> paths =
      ParseMatchers(Field(request, "paths"), absl::StrCat(where, ".paths"));
  if (!paths.ok()) return paths.status();
  rule->paths = *std::move(paths);
  const Value* headers = Field(request, "headers");
  if (headers == nullptr) return absl::OkStatus();
  const std::string headers_where = absl::StrCat(where, ".headers");
  if (headers->kind_case() != Value::kListValue) return Invalid(headers_where, "is not an array");
  for (int i = 0; i < headers->list_value().values_size(); ++i) {
    absl::StatusOr<AuthzPolicy::HeaderRule> header =
        ParseHeader(headers->list_value().values(i), absl::StrCat(headers_where, "[", i, "]"));
    if (!header.ok()) return header.status();
    rule->headers.push_back(*std::move(header));
  }
  return absl::OkStatus();
}

absl::StatusOr<AuthzPolicy::Rule> ParseRule(const Value& value, const std::string& where) {
  if (value.kind_case() != Value::kStructValue) return Invalid(where, "is not an object");
  const Struct& object = value.struct_value();
  if (absl::Status s = OnlyKnownFields(object, where, {"name", "source", "request"}); !s.ok()) {
    return s;
  }
  AuthzPolicy::Rule rule;
  const Value* name = Field(object, "name");
  if (name == nullptr || name->kind_case() != Value::kStringValue) {
    return Invalid(where, "\"name\" is missing or not a string");
  }
  rule.name = name->string_value();
  if (const Value* source = Field(object, "source"); source != nullptr) {
    const std::string source_where = absl::StrCat(where, ".source");
    if (source->kind_case() != Value::kStructValue) return Invalid(source_where, "is not an object");
    if (absl::Status s = OnlyKnownFields(source->struct_value(), source_where, {"principals"});
        !s.ok()) {
      return s;
    }
    absl::StatusOr<std::vector<AuthzPolicy::Matcher>> principals = ParseMatchers(
        Field(source->struct_value(), "principals"), absl::StrCat(source_where, ".principals"));
    if (!principals.ok()) return principals.status();
    rule.principals = *std::move(principals);
  }
  if (const Value* request = Field(object, "request"); request != nullptr) {
    if (absl::Status s = ParseRequest(*request, absl::StrCat(where, ".request"), &rule); !s.ok()) {
      return s;
    }
  }
  return rule;
}

absl::StatusOr<std::vector<AuthzPolicy::Rule>> ParseRules(const Value* list,
                                                         const std::string& where) {
  std::vector<AuthzPolicy::Rule> rules;
  if (list == nullptr) return rules;
  if (list->kind_case() != Value::kListValue) return Invalid(where, "is not an array");
  for (int i = 0; i < list->list_value().values_size(); ++i) {
    absl::StatusOr<AuthzPolicy::Rule> rule =
        ParseRule(list->list_value().values(i), absl::StrCat(where, "[", i, "]"));
    if (!rule.ok()) return rule.status();
    rules.push_back(*std::move(rule));
  }
  return rules;
}

bool AnyMatches(const std::vector<AuthzPolicy::Matcher>& matchers, absl::string_view s) {
  for (const AuthzPolicy::Matcher& m : matchers) {
    if (m.Matches(s)) return true;
  }
  return false;
}

// As gRPC's authenticated-principal matcher: URI SANs if any match, then DNS
// SANs, then the subject; never a peer without TLS.
bool PrincipalMatches(const std::vector<AuthzPolicy::Matcher>& principals,
                      const CallFacts& call) {
  if (!call.authenticated) return false;
  for (const std::string& uri : call.uri_sans) {
    if (AnyMatches(principals, uri)) return true;
  }
  for (const std::string& dns : call.dns_sans) {
    if (AnyMatches(principals, dns)) return true;
  }
  return AnyMatches(principals, call.subject);
}

}  // namespace

bool AuthzPolicy::Matcher::Matches(absl::string_view s) const {
  switch (type) {
    case Type::kExact:
      return s == value;
    case Type::kPrefix:
      return absl::StartsWith(s, value);
    case Type::kSuffix:
      return absl::EndsWith(s, value);
  }
  return false;
}

bool AuthzPolicy::Rule::Matches(const CallFacts& call) const {
  if (!principals.empty() && !PrincipalMatches(principals, call)) return false;
  if (!paths.empty() && !AnyMatches(paths, call.path)) return false;
  for (const HeaderRule& header : headers) {
    bool matched = false;
    for (const auto& [key, value] : call.headers) {
      matched = matched || (key == header.key && AnyMatches(header.values, value));
    }
    if (!matched) return false;
  }
  return true;
}

absl::StatusOr<AuthzPolicy> AuthzPolicy::Parse(absl::string_view json) {
  Struct root;
  google::protobuf::util::JsonParseOptions options;
  if (auto s = google::protobuf::util::JsonStringToMessage(std::string(json), &root, options);
      !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a JSON object: ", BoundMessage(std::string(s.message()))));
  }
  if (absl::Status s = OnlyKnownFields(root, "policy", {"name", "deny_rules", "allow_rules"});
      !s.ok()) {
    return s;
  }
  AuthzPolicy policy;
  const Value* name = Field(root, "name");
  if (name == nullptr || name->kind_case() != Value::kStringValue) {
    return Invalid("policy", "\"name\" is missing or not a string");
  }
  policy.name_ = name->string_value();
  absl::StatusOr<std::vector<Rule>> deny = ParseRules(Field(root, "deny_rules"), "deny_rules");
  if (!deny.ok()) return deny.status();
  policy.deny_ = *std::move(deny);
  const Value* allow = Field(root, "allow_rules");
  if (allow == nullptr) {
    return Invalid("policy", "\"allow_rules\" is missing (an empty list denies every call)");
  }
  absl::StatusOr<std::vector<Rule>> allow_rules = ParseRules(allow, "allow_rules");
  if (!allow_rules.ok()) return allow_rules.status();
  policy.allow_ = *std::move(allow_rules);
  return policy;
}

AuthzPolicy::Decision AuthzPolicy::Evaluate(const CallFacts& call) const {
  for (const Rule& rule : deny_) {
    if (rule.Matches(call)) return {false, absl::StrCat("deny_rules[", rule.name, "]")};
  }
  for (const Rule& rule : allow_) {
    if (rule.Matches(call)) return {true, absl::StrCat("allow_rules[", rule.name, "]")};
  }
  return {false, "no allow rule"};
}

}  // namespace virtgate
