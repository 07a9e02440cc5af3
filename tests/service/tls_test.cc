// TLS, mTLS and authorization, in-process virtgated on test:///default with
// certificates made by deploy/make-certs.sh (openssl): who gets through the
// handshake, what a rotated certificate changes without a restart, what the
// built-in and a file policy let each identity call, and a policy changed
// on disk applying without a restart.
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/support/command.h"
#include "tests/support/files.h"
#include "tests/support/server_process.h"
#include "tests/support/wait_for.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::ReadFile;
using testing::RunCommand;
using testing::WaitFor;

constexpr absl::Duration kRotationTimeout = absl::Seconds(30);

// A CA with a server certificate and client certificates for the roles
// orchestrator, operator and monitoring (deploy/make-certs.sh).
std::string MakeCerts(const std::string& dir) {
  testing::CommandResult r =
      RunCommand({std::string(VIRTGATE_SOURCE_DIR) + "/deploy/make-certs.sh", dir});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  return dir;
}

void WriteFile(const std::string& path, const std::string& content) {
  // Written aside and renamed over: a reader sees the old or the new file.
  const std::string tmp = path + ".new";
  std::ofstream(tmp) << content;
  std::filesystem::rename(tmp, path);
}

struct Client {
  std::string ca;    // PEM CA to verify the server with
  std::string cert;  // PEM client certificate, or empty
  std::string key;
};

Client ClientOf(const std::string& ca_dir, const std::string& cert_dir = "",
                const std::string& role = "") {
  Client c{ReadFile(ca_dir + "/ca.crt"), "", ""};
  if (!role.empty()) {
    c.cert = ReadFile(cert_dir + "/" + role + ".crt");
    c.key = ReadFile(cert_dir + "/" + role + ".key");
  }
  return c;
}

// A channel of its own (no shared subchannel), so each is a new handshake.
std::shared_ptr<grpc::Channel> NewChannel(int port, const Client& client) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = client.ca;
  ssl.pem_cert_chain = client.cert;
  ssl.pem_private_key = client.key;
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port), grpc::SslCredentials(ssl),
                                   args);
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return ctx;
}

grpc::Status ListDomains(int port, const Client& client) {
  auto stub = v1::Hypervisor::NewStub(NewChannel(port, client));
  v1::ListDomainsResponse response;
  return stub->ListDomains(Context().get(), {}, &response);
}

grpc::Status GetHostInfo(int port, const Client& client) {
  auto stub = v1::Hypervisor::NewStub(NewChannel(port, client));
  v1::HostInfo response;
  return stub->GetHostInfo(Context().get(), {}, &response);
}

grpc::Status Health(int port, const Client& client) {
  auto stub = grpc::health::v1::Health::NewStub(NewChannel(port, client));
  grpc::health::v1::HealthCheckResponse response;
  return stub->Check(Context().get(), {}, &response);
}

// A method the server does not have (like a future action on domains),
// called with an empty message.
grpc::Status CallUnknownMethod(int port, const Client& client, const std::string& method) {
  grpc::GenericStub stub(NewChannel(port, client));
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;
  grpc::Status status;
  bool done = false;
  std::mutex mu;
  std::condition_variable cv;
  auto ctx = Context();
  stub.UnaryCall(ctx.get(), method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   std::lock_guard<std::mutex> lock(mu);
                   status = std::move(s);
                   done = true;
                   cv.notify_one();
                 });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  return status;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char path[] = "/tmp/vgtls.XXXXXX";
    ASSERT_NE(mkdtemp(path), nullptr);
    dir_ = path;
    a_ = MakeCerts(dir_ + "/a");
    b_ = MakeCerts(dir_ + "/b");  // another CA
    live_ = dir_ + "/live";
    std::filesystem::create_directory(live_);
    for (const char* f : {"server.crt", "server.key", "ca.crt"}) {
      std::filesystem::copy_file(a_ + "/" + f, live_ + "/" + f);
    }
  }
  void TearDown() override {
    server_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  Server::Options TlsOptions(bool mtls) {
    Server::Options o;
    o.libvirt_uri = "test:///default";
    o.listen = "127.0.0.1:0";
    o.tls_cert_file = live_ + "/server.crt";
    o.tls_key_file = live_ + "/server.key";
    if (mtls) o.tls_client_ca_file = live_ + "/ca.crt";
    o.tls_refresh_interval = absl::Seconds(1);
    o.authz_refresh_interval = absl::Seconds(1);
    return o;
  }

  int Start(Server::Options o) {
    absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(std::move(o));
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return 0;
    server_ = *std::move(server);
    return server_->port();
  }

  std::string dir_, a_, b_, live_;
  std::unique_ptr<Server> server_;
};

TEST_F(TlsTest, OnlyClientsTrustingTheCaConnectAndARotatedCertificateIsServedWithoutRestart) {
  const int port = Start(TlsOptions(/*mtls=*/false));
  ASSERT_NE(port, 0);
  EXPECT_TRUE(ListDomains(port, ClientOf(a_)).ok());
  const grpc::Status untrusted = ListDomains(port, ClientOf(b_));
  EXPECT_EQ(untrusted.error_code(), grpc::StatusCode::UNAVAILABLE) << untrusted.error_message();

  // Rotate: B's certificate and key replace A's on disk.
  WriteFile(live_ + "/server.key", ReadFile(b_ + "/server.key"));
  WriteFile(live_ + "/server.crt", ReadFile(b_ + "/server.crt"));
  EXPECT_TRUE(WaitFor([&] { return ListDomains(port, ClientOf(b_)).ok(); }, kRotationTimeout))
      << "a client trusting the new CA was never served";
  EXPECT_FALSE(ListDomains(port, ClientOf(a_)).ok()) << "new connections still see the old one";

  // A broken file replaces it: the last good certificate stays, over three
  // refresh intervals of new connections.
  WriteFile(live_ + "/server.crt", "not a certificate\n");
  const absl::Time until = absl::Now() + absl::Seconds(3);
  while (absl::Now() < until) {
    const grpc::Status s = ListDomains(port, ClientOf(b_));
    ASSERT_TRUE(s.ok()) << "after a bad certificate file: " << s.error_message();
  }
}

TEST_F(TlsTest, MtlsRefusesMissingAndForeignCertificatesAndAllowsOnlyReadsByDefault) {
  const int port = Start(TlsOptions(/*mtls=*/true));
  ASSERT_NE(port, 0);
  EXPECT_FALSE(ListDomains(port, ClientOf(a_)).ok()) << "no client certificate was served";
  EXPECT_FALSE(ListDomains(port, ClientOf(a_, b_, "orchestrator")).ok())
      << "a certificate from another CA was served";
  const Client orchestrator = ClientOf(a_, a_, "orchestrator");
  EXPECT_TRUE(ListDomains(port, orchestrator).ok());
  EXPECT_TRUE(GetHostInfo(port, orchestrator).ok());
  EXPECT_TRUE(Health(port, orchestrator).ok());
  // Anything but the read methods (a future action on domains) is denied
  // by the built-in policy, not merely unimplemented.
  const grpc::Status action =
      CallUnknownMethod(port, orchestrator, "/virtgate.v1.Hypervisor/DestroyDomain");
  EXPECT_EQ(action.error_code(), grpc::StatusCode::PERMISSION_DENIED) << action.error_message();
  EXPECT_THAT(action.error_message(), HasSubstr("spiffe://virtgate/orchestrator"));
  EXPECT_THAT(action.error_message(), HasSubstr("/virtgate.v1.Hypervisor/DestroyDomain"));
}

constexpr char kPolicy[] = R"json({
  "name": "test-policy",
  "allow_rules": [
    {"name": "orchestrator-reads",
     "source": {"principals": ["spiffe://virtgate/orchestrator"]},
     "request": {"paths": ["/virtgate.v1.Hypervisor/ListDomains",
                           "/virtgate.v1.Hypervisor/GetDomain"]}},
    {"name": "monitoring",
     "source": {"principals": ["spiffe://virtgate/monitoring"]},
     "request": {"paths": ["/virtgate.v1.Hypervisor/GetHostInfo"]}}
  ]
})json";

// Everything virtgated writes to stderr (its log) while it lives.
class CapturedStderr {
 public:
  explicit CapturedStderr(const std::string& path) : path_(path) {
    fflush(stderr);
    saved_ = dup(2);
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    close(fd);
  }
  ~CapturedStderr() {
    fflush(stderr);
    dup2(saved_, 2);
    close(saved_);
  }
  std::string Text() const { return ReadFile(path_); }

 private:
  std::string path_;
  int saved_ = -1;
};

TEST_F(TlsTest, PolicyFileDecidesPerIdentityLogsEachDenialOnceAndReloadsWithoutRestart) {
  const std::string policy = live_ + "/policy.json";
  WriteFile(policy, kPolicy);
  Server::Options o = TlsOptions(/*mtls=*/true);
  o.authz_policy_file = policy;
  CapturedStderr log(dir_ + "/stderr.log");
  const int port = Start(o);
  ASSERT_NE(port, 0);
  const Client orchestrator = ClientOf(a_, a_, "orchestrator");
  const Client monitoring = ClientOf(a_, a_, "monitoring");
  const Client operator_ = ClientOf(a_, a_, "operator");

  EXPECT_TRUE(ListDomains(port, orchestrator).ok());
  EXPECT_TRUE(GetHostInfo(port, monitoring).ok());
  EXPECT_TRUE(Health(port, operator_).ok()) << "health is always reachable";
  for (int i = 0; i < 5; ++i) {
    const grpc::Status denied = GetHostInfo(port, orchestrator);
    ASSERT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED) << denied.error_message();
  }
  EXPECT_EQ(ListDomains(port, monitoring).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ListDomains(port, operator_).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // Five denied calls, one line.
  int lines = 0;
  for (absl::string_view line : absl::StrSplit(log.Text(), '\n')) {
    if (absl::StrContains(line, "denied") &&
        absl::StrContains(line, "spiffe://virtgate/orchestrator") &&
        absl::StrContains(line, "/virtgate.v1.Hypervisor/GetHostInfo")) {
      ++lines;
    }
  }
  EXPECT_EQ(lines, 1) << log.Text();

  // A broken policy is logged and the last good one kept...
  WriteFile(policy, "{\"name\": \"broken\", \"allow_rule\": []}");
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(log.Text(), "allow_rule"); },
                      kRotationTimeout))
      << log.Text();
  EXPECT_TRUE(ListDomains(port, orchestrator).ok());
  // ...and a good new one applies without a restart.
  std::string widened = kPolicy;
  widened.replace(widened.find("/virtgate.v1.Hypervisor/GetHostInfo"),
                  strlen("/virtgate.v1.Hypervisor/GetHostInfo"), "/virtgate.v1.Hypervisor/*");
  WriteFile(policy, widened);
  EXPECT_TRUE(WaitFor([&] { return ListDomains(port, monitoring).ok(); }, kRotationTimeout))
      << "the widened policy never applied";
  EXPECT_EQ(ListDomains(port, operator_).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(TlsTest, BadTlsOrPolicyConfigurationIsRefusedAtStartNamingTheProblem) {
  auto start_error = [](Server::Options o) {
    absl::StatusOr<std::unique_ptr<Server>> s = Server::BuildAndStart(std::move(o));
    return s.ok() ? std::string("started") : std::string(s.status().message());
  };
  Server::Options mismatched = TlsOptions(true);
  mismatched.tls_key_file = b_ + "/server.key";
  EXPECT_THAT(start_error(mismatched), HasSubstr("does not match the certificate"));

  Server::Options no_cert = TlsOptions(true);
  no_cert.tls_cert_file = dir_ + "/missing.crt";
  EXPECT_THAT(start_error(no_cert), HasSubstr("--tls_cert " + dir_ + "/missing.crt"));

  Server::Options bad_policy = TlsOptions(true);
  bad_policy.authz_policy_file = dir_ + "/bad.json";
  WriteFile(bad_policy.authz_policy_file,
            R"({"name": "p", "allow_rules": [{"name": "r", "sources": {}}]})");
  EXPECT_THAT(start_error(bad_policy), HasSubstr("allow_rules[0]: unknown field \"sources\""));

  Server::Options plaintext_policy;
  plaintext_policy.libvirt_uri = "test:///default";
  plaintext_policy.listen = "127.0.0.1:0";
  plaintext_policy.authz_policy_file = bad_policy.authz_policy_file;
  EXPECT_THAT(start_error(plaintext_policy), HasSubstr("--authz_policy needs TLS"));
  EXPECT_THAT(start_error(plaintext_policy), Not(HasSubstr("started")));
}

// --insecure on a non-loopback address starts, and says what it gives away.
TEST_F(TlsTest, InsecureOnAPublicAddressStartsWithAWarning) {
  Server::Options o;
  o.libvirt_uri = "test:///default";
  o.listen = "0.0.0.0:0";
  o.insecure = true;
  CapturedStderr log(dir_ + "/stderr.log");
  ASSERT_NE(Start(o), 0);
  EXPECT_THAT(log.Text(), HasSubstr("WARN virtgated: serving PLAINTEXT on non-loopback 0.0.0.0:0"));
}

// virtgatectl: TLS options from flags or VIRTGATE_TLS_*, and
// --tls_server_name for a server dialled by another name than its
// certificate's.
TEST_F(TlsTest, VirtgatectlTakesTlsFromFlagsOrEnvironmentAndAServerName) {
  Server::Options o = TlsOptions(/*mtls=*/true);
  o.listen = "0.0.0.0:0";
  const int port = Start(o);
  ASSERT_NE(port, 0);
  const std::string other_name = absl::StrCat("127.0.0.2:", port);  // not in the certificate
  const std::vector<std::string> env = {"VIRTGATE_TLS_CA=" + a_ + "/ca.crt",
                                        "VIRTGATE_TLS_CLIENT_CERT=" + a_ + "/orchestrator.crt",
                                        "VIRTGATE_TLS_CLIENT_KEY=" + a_ + "/orchestrator.key"};
  testing::CommandResult r =
      testing::RunCtl({"--server", other_name, "--tls_server_name", "localhost", "host"}, env);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.out, HasSubstr("TEST"));
  r = testing::RunCtl({"--server", other_name, "host"}, env);
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_THAT(r.err, HasSubstr("peer name 127.0.0.2 is not in peer certificate"));
  // An address, not "localhost": resolving a name goes through c-ares,
  // which leaks 10 bytes per process under LeakSanitizer.
  r = testing::RunCtl({"--server", absl::StrCat("127.0.0.1:", port), "--tls_ca", a_ + "/ca.crt",
                       "--tls_cert", a_ + "/monitoring.crt", "--tls_key", a_ + "/monitoring.key",
                       "health"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.out, HasSubstr("SERVING"));
}

}  // namespace
}  // namespace virtgate
