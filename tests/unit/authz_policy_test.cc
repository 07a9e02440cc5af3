// The gRFC A43 policy as virtgated reads it: matching as gRPC's translator
// (exact, prefix, suffix, any; URI SANs, then DNS SANs, then subject; deny
// before allow; nothing matched: denied), and errors that name the field.
#include "server/rpc/authz_policy.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace virtgate {
namespace {

using ::testing::HasSubstr;

CallFacts Call(const std::string& path, const std::string& uri = "", bool tls = true) {
  CallFacts c;
  c.authenticated = tls;
  if (!uri.empty()) c.uri_sans = {uri};
  c.subject = "CN=someone";
  c.path = path;
  return c;
}

AuthzPolicy MustParse(const std::string& json) {
  absl::StatusOr<AuthzPolicy> p = AuthzPolicy::Parse(json);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : *AuthzPolicy::Parse(R"({"name":"x","allow_rules":[]})");
}

TEST(AuthzPolicyTest, DenyComesFirstThenAnAllowMustMatch) {
  const AuthzPolicy p = MustParse(R"({
    "name": "p",
    "deny_rules": [{"name": "no-watch", "source": {"principals": ["*/intern"]},
                    "request": {"paths": ["/virtgate.v1.Hypervisor/WatchLifecycle"]}}],
    "allow_rules": [{"name": "team", "source": {"principals": ["spiffe://virtgate/*"]},
                     "request": {"paths": ["/virtgate.v1.Hypervisor/*"]}},
                    {"name": "everyone-host", "request": {"paths": ["*/GetHostInfo"]}}]})");
  const std::string watch = "/virtgate.v1.Hypervisor/WatchLifecycle";
  EXPECT_TRUE(p.Evaluate(Call(watch, "spiffe://virtgate/orchestrator")).allowed);
  AuthzPolicy::Decision d = p.Evaluate(Call(watch, "spiffe://virtgate/intern"));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "deny_rules[no-watch]");
  d = p.Evaluate(Call(watch, "spiffe://elsewhere/x"));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rule, "no allow rule");
  // No principals: any peer, with or without a certificate.
  EXPECT_TRUE(p.Evaluate(Call("/virtgate.v1.Hypervisor/GetHostInfo", "", false)).allowed);
  // Principals never match a peer without a certificate.
  EXPECT_FALSE(p.Evaluate(Call(watch, "spiffe://virtgate/orchestrator", false)).allowed);
}

TEST(AuthzPolicyTest, PrincipalsMatchUriThenDnsThenSubjectAndHeadersMustAllMatch) {
  const AuthzPolicy p = MustParse(R"({
    "name": "p",
    "allow_rules": [{"name": "dns", "source": {"principals": ["node-1.example"]}},
                    {"name": "subject", "source": {"principals": ["CN=admin"]},
                     "request": {"headers": [{"key": "X-Team", "values": ["ops", "sre*"]}]}}]})");
  CallFacts dns = Call("/any");
  dns.dns_sans = {"node-1.example"};
  EXPECT_TRUE(p.Evaluate(dns).allowed);
  CallFacts admin = Call("/any");
  admin.subject = "CN=admin";
  EXPECT_FALSE(p.Evaluate(admin).allowed) << "header missing";
  admin.headers = {{"x-team", "sre-berlin"}};
  EXPECT_TRUE(p.Evaluate(admin).allowed);
  admin.headers = {{"x-team", "dev"}};
  EXPECT_FALSE(p.Evaluate(admin).allowed);
}

TEST(AuthzPolicyTest, MistakesAreRefusedNamingTheField) {
  auto error = [](const std::string& json) {
    absl::StatusOr<AuthzPolicy> p = AuthzPolicy::Parse(json);
    return p.ok() ? std::string("parsed") : std::string(p.status().message());
  };
  EXPECT_THAT(error("{"), HasSubstr("not a JSON object"));
  EXPECT_THAT(error(R"({"allow_rules": []})"), HasSubstr("\"name\" is missing"));
  EXPECT_THAT(error(R"({"name": "p"})"), HasSubstr("\"allow_rules\" is missing"));
  EXPECT_THAT(error(R"({"name": "p", "allow_rules": [{"name": "r", "sources": {}}]})"),
              HasSubstr("allow_rules[0]: unknown field \"sources\""));
  EXPECT_THAT(error(R"({"name": "p", "allow_rules": [{"name": "r",
                        "request": {"paths": ["/a", 3]}}]})"),
              HasSubstr("allow_rules[0].request.paths[1]: is not a string"));
  EXPECT_THAT(error(R"({"name": "p", "allow_rules": [{"name": "r",
                        "request": {"headers": [{"key": ":path", "values": ["x"]}]}}]})"),
              HasSubstr("unsupported \"key\" \":path\""));
  EXPECT_THAT(error(R"({"name": "p", "deny_rules": {}, "allow_rules": []})"),
              HasSubstr("deny_rules: is not an array"));
}

}  // namespace
}  // namespace virtgate
