// Process-level test of virtgatectl: the real virtgated runs as a child
// process on libvirt's test:///default driver, listening on a unix socket in
// a private temporary directory, and the real virtgatectl binary runs
// against it. Assertions are on what a user sees: stdout, the one stderr
// line, and the exit status. Also checks the server side a CLI user relies
// on: reflection (what grpcurl lists) and exit 0 on SIGTERM.
//
// Readiness and exits are waited for as conditions with deadlines, never
// with fixed sleeps (see tests/support/server_process.h).
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/support/child_process.h"
#include "tests/support/command.h"
#include "tests/support/files.h"
#include "tests/support/server_process.h"
#include "virtgate/client.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

// The domain libvirt's test:///default driver always has, running.
constexpr char kTestDomain[] = "test";
constexpr char kTestUuid[] = "6695eb01-f6a4-8304-79aa-97f2502e193f";

using testing::CommandResult;
using testing::DescribeWaitStatus;
using testing::RunCtl;
using testing::ServerProcess;
using testing::TempDir;

// The rows of a `list` table, each split into its columns.
std::vector<std::vector<std::string>> TableRows(const std::string& table) {
  std::vector<std::vector<std::string>> rows;
  for (absl::string_view line : absl::StrSplit(table, '\n', absl::SkipEmpty())) {
    rows.push_back(absl::StrSplit(line, ' ', absl::SkipEmpty()));
  }
  return rows;
}

// The value of "key:" in `get`/`host` output.
std::optional<std::string> FieldOf(const std::string& text, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, absl::StrCat(key, ":"))) {
      return std::string(absl::StripAsciiWhitespace(line.substr(key.size() + 1)));
    }
  }
  return std::nullopt;
}

// One virtgated for all tests of this suite: they only read, and starting
// one per test would add nothing but time.
class VirtgatectlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
    if (server.ok()) {
      server_ = server->release();
    } else {
      start_error_ = new std::string(server.status().ToString());
    }
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      absl::StatusOr<int> status = server_->Terminate();
      EXPECT_TRUE(status.ok()) << status.status();
      if (status.ok()) {
        EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
            << DescribeWaitStatus(*status) << "; log:\n" << server_->Log();
      }
    }
    delete server_;
    server_ = nullptr;
    delete start_error_;
    start_error_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr) << (start_error_ != nullptr ? *start_error_ : "");
  }

  // virtgatectl with --server pointing at the suite's server.
  static CommandResult Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", server_->target()});
    return RunCtl(std::move(args));
  }

  static ServerProcess* server_;
  static std::string* start_error_;
};

ServerProcess* VirtgatectlTest::server_ = nullptr;
std::string* VirtgatectlTest::start_error_ = nullptr;

TEST_F(VirtgatectlTest, ListPrintsTableWithRunningTestDomain) {
  const CommandResult r = Ctl({"list"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.err, IsEmpty());
  const std::vector<std::vector<std::string>> rows = TableRows(r.out);
  ASSERT_FALSE(rows.empty()) << r.Describe();
  EXPECT_THAT(rows[0], ElementsAre("NAME", "UUID", "ID", "STATE", "VCPUS", "MEMORY"));
  const std::vector<std::string>* test_row = nullptr;
  for (const std::vector<std::string>& row : rows) {
    if (!row.empty() && row[0] == kTestDomain) test_row = &row;
  }
  ASSERT_NE(test_row, nullptr) << r.out;
  // MEMORY is "<number> <unit>", so the row splits into seven words.
  EXPECT_THAT(*test_row, ElementsAre(kTestDomain, kTestUuid, ::testing::_, "running", ::testing::_,
                                     ::testing::_, ::testing::EndsWith("iB")))
      << r.out;
}

TEST_F(VirtgatectlTest, ListJsonIsOneListDomainsResponse) {
  const CommandResult r = Ctl({"list", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  v1::ListDomainsResponse response;
  const auto parsed = google::protobuf::util::JsonStringToMessage(r.out, &response);
  ASSERT_TRUE(parsed.ok()) << parsed.ToString() << "\n" << r.out;
  EXPECT_THAT(response.next_page_token(), IsEmpty());
  bool found = false;
  for (const v1::Domain& domain : response.domains()) {
    if (domain.name() != kTestDomain) continue;
    found = true;
    EXPECT_EQ(domain.uuid(), kTestUuid);
    EXPECT_EQ(domain.state(), v1::DOMAIN_STATE_RUNNING);
  }
  EXPECT_TRUE(found) << r.out;
  // Proto field names, and default values printed too.
  EXPECT_THAT(r.out, AllOf(HasSubstr("\"memory_kib\""), HasSubstr("\"autostart\"")));
}

TEST_F(VirtgatectlTest, ListFiltersReachTheServer) {
  auto names = [](const CommandResult& r) {
    std::vector<std::string> out;
    std::vector<std::vector<std::string>> rows = TableRows(r.out);
    for (size_t i = 1; i < rows.size(); ++i) out.push_back(rows[i][0]);
    return out;
  };
  // Options after the command, both value spellings, repeated and
  // comma-separated states, and one domain per page.
  CommandResult r = Ctl({"list", "--active", "--state=running,paused", "--page-size", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(names(r), Contains(kTestDomain));

  r = Ctl({"list", "--inactive"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(names(r), ::testing::Not(Contains(kTestDomain)));

  r = Ctl({"list", "--state", "shutoff", "--state", "paused"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(names(r), ::testing::Not(Contains(kTestDomain)));
}

// `list` walks every page: a server on libvirt's test driver loaded from a
// file of 13 domains, listed 2 and 5 per call and with the server's default,
// shows each domain exactly once, in name order.
TEST(VirtgatectlPagingTest, ListShowsEveryPageOnce) {
  TempDir dir;
  std::vector<std::string> want;
  std::string node = "<node>\n";
  for (int i = 0; i < 13; ++i) {
    want.push_back(absl::StrCat("paged-", i < 10 ? "0" : "", i));
    absl::StrAppend(&node, "<domain type='test'><name>", want.back(),
                    "</name><memory>8192</memory><os><type>hvm</type></os></domain>\n");
  }
  node += "</node>\n";
  const std::string node_file = dir.path() + "/node.xml";
  {
    std::ofstream out(node_file);
    out << node;
    ASSERT_TRUE(out.good()) << node_file;
  }
  ServerProcess::Config config;
  config.libvirt_uri = "test://" + node_file;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  for (const char* page_size : {"2", "5", "0"}) {
    SCOPED_TRACE(absl::StrCat("--page-size ", page_size));
    const CommandResult r =
        RunCtl({"--server", (*server)->target(), "list", "--page-size", page_size});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    std::vector<std::string> names;
    const std::vector<std::vector<std::string>> rows = TableRows(r.out);
    for (size_t i = 1; i < rows.size(); ++i) names.push_back(rows[i][0]);
    EXPECT_EQ(names, want) << r.out;
  }
}

TEST_F(VirtgatectlTest, GetByNameShowsAllFields) {
  const CommandResult r = Ctl({"get", kTestDomain});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.err, IsEmpty());
  EXPECT_EQ(FieldOf(r.out, "uuid"), kTestUuid) << r.out;
  EXPECT_EQ(FieldOf(r.out, "name"), kTestDomain) << r.out;
  EXPECT_EQ(FieldOf(r.out, "state"), "running") << r.out;
  for (const char* key : {"id", "state_reason", "persistent", "autostart", "vcpus",
                          "memory_kib", "max_memory_kib", "cpu_time_ns", "stale"}) {
    EXPECT_TRUE(FieldOf(r.out, key).has_value()) << key << " missing in\n" << r.out;
  }
}

TEST_F(VirtgatectlTest, GetByUuidInAnyForm) {
  const std::string upper = absl::AsciiStrToUpper(kTestUuid);
  const std::string plain = absl::StrReplaceAll(kTestUuid, {{"-", ""}});
  for (const std::string& uuid : {std::string(kTestUuid), upper, plain}) {
    const CommandResult r = Ctl({"get", uuid});
    ASSERT_EQ(r.exit_code, 0) << uuid << ": " << r.Describe();
    EXPECT_EQ(FieldOf(r.out, "uuid"), kTestUuid) << r.out;
    EXPECT_EQ(FieldOf(r.out, "name"), kTestDomain) << r.out;
  }
  const CommandResult r = Ctl({"get", plain, "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  v1::Domain domain;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &domain).ok()) << r.out;
  EXPECT_EQ(domain.name(), kTestDomain);
  EXPECT_EQ(domain.uuid(), kTestUuid);
}

TEST_F(VirtgatectlTest, GetMissingDomainFailsWithOneLine) {
  const CommandResult r = Ctl({"get", "nope"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_THAT(r.out, IsEmpty());
  ASSERT_EQ(r.ErrLines().size(), 1u) << r.Describe();
  EXPECT_THAT(r.err, StartsWith("virtgatectl: "));
  EXPECT_THAT(absl::AsciiStrToLower(r.err), AllOf(HasSubstr("not found"), HasSubstr("nope")));
}

TEST_F(VirtgatectlTest, HostShowsTestHypervisor) {
  CommandResult r = Ctl({"host"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(FieldOf(r.out, "hypervisor_type"), "TEST") << r.out;
  EXPECT_EQ(FieldOf(r.out, "uri"), "test:///default") << r.out;
  EXPECT_EQ(FieldOf(r.out, "connection.up"), "yes") << r.out;

  r = Ctl({"host", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  v1::HostInfo info;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &info).ok()) << r.out;
  EXPECT_EQ(info.hypervisor_type(), "TEST");
  EXPECT_TRUE(info.connection().up());
}

TEST_F(VirtgatectlTest, HealthPrintsServing) {
  CommandResult r = Ctl({"health"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "SERVING\n");
  EXPECT_THAT(r.err, IsEmpty());

  r = Ctl({"health", "virtgate.v1.Hypervisor"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "SERVING\n");

  // An unknown service is an error of the call (NOT_FOUND), not NOT_SERVING.
  r = Ctl({"health", "no.such.Service"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_THAT(r.out, IsEmpty());
  EXPECT_EQ(r.ErrLines().size(), 1u) << r.Describe();
}

TEST_F(VirtgatectlTest, ServerComesFromEnvironmentAndOptionsGoAnywhere) {
  CommandResult r = RunCtl({"health"}, {absl::StrCat("VIRTGATE_SERVER=", server_->target())});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "SERVING\n");

  r = RunCtl({"health", "--timeout=3s", absl::StrCat("--server=", server_->target())});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "SERVING\n");

  // --server beats the environment.
  r = RunCtl({"--server", server_->target(), "health"},
             {"VIRTGATE_SERVER=unix:/nonexistent/virtgate.sock"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

TEST_F(VirtgatectlTest, ReflectionListsServicesLikeGrpcurl) {
  namespace reflection = grpc::reflection::v1alpha;
  std::unique_ptr<reflection::ServerReflection::Stub> stub = reflection::ServerReflection::NewStub(
      grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  std::unique_ptr<grpc::ClientReaderWriter<reflection::ServerReflectionRequest,
                                           reflection::ServerReflectionResponse>>
      stream = stub->ServerReflectionInfo(&context);
  reflection::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->WritesDone());
  reflection::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  const grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(response.has_list_services_response()) << response.DebugString();
  std::vector<std::string> services;
  for (const reflection::ServiceResponse& service : response.list_services_response().service()) {
    services.push_back(service.name());
  }
  EXPECT_THAT(services, Contains("virtgate.v1.Hypervisor"));
  EXPECT_THAT(services, Contains("grpc.health.v1.Health"));
}

// What `grpcurl describe` and a plain `grpcurl ... grpc.health.v1.Health/Check`
// need: the file that defines a listed service, by symbol.
google::protobuf::FileDescriptorProto FileContainingSymbol(const std::string& target,
                                                            const std::string& symbol) {
  namespace reflection = grpc::reflection::v1alpha;
  auto stub = reflection::ServerReflection::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  auto stream = stub->ServerReflectionInfo(&context);
  reflection::ServerReflectionRequest request;
  request.set_file_containing_symbol(symbol);
  EXPECT_TRUE(stream->Write(request));
  EXPECT_TRUE(stream->WritesDone());
  reflection::ServerReflectionResponse response;
  EXPECT_TRUE(stream->Read(&response));
  EXPECT_TRUE(stream->Finish().ok());
  google::protobuf::FileDescriptorProto file;
  EXPECT_TRUE(response.has_file_descriptor_response())
      << symbol << ": " << response.error_response().error_message();
  if (response.file_descriptor_response().file_descriptor_proto_size() > 0) {
    EXPECT_TRUE(file.ParseFromString(response.file_descriptor_response().file_descriptor_proto(0)));
  }
  return file;
}

TEST_F(VirtgatectlTest, ReflectionDescribesEveryListedService) {
  const google::protobuf::FileDescriptorProto health =
      FileContainingSymbol(server_->target(), "grpc.health.v1.Health");
  EXPECT_EQ(health.name(), "grpc/health/v1/health.proto");
  ASSERT_EQ(health.service_size(), 1) << health.DebugString();
  EXPECT_EQ(health.service(0).name(), "Health");
  std::vector<std::string> methods;
  for (const auto& method : health.service(0).method()) {
    methods.push_back(absl::StrCat(method.name(), "(", method.input_type(), ") ",
                                   method.output_type()));
  }
  EXPECT_THAT(methods, Contains("Check(.grpc.health.v1.HealthCheckRequest) "
                                ".grpc.health.v1.HealthCheckResponse"));
  const google::protobuf::FileDescriptorProto api =
      FileContainingSymbol(server_->target(), "virtgate.v1.Hypervisor");
  EXPECT_EQ(api.package(), "virtgate.v1");
  // WatchLifecycle is served raw (bytes in, bytes out) but described, like
  // the rest, with its messages.
  std::vector<std::string> api_methods;
  for (const auto& service : api.service()) {
    for (const auto& method : service.method()) {
      api_methods.push_back(absl::StrCat(method.name(), "(", method.input_type(), ") ",
                                         method.server_streaming() ? "stream " : "",
                                         method.output_type()));
    }
  }
  EXPECT_THAT(api_methods, Contains("WatchLifecycle(.virtgate.v1.WatchLifecycleRequest) stream "
                                    ".virtgate.v1.WatchLifecycleResponse"));
}

// --reflection=false leaves reflection out; the API is still served.
TEST(VirtgatedReflectionTest, ReflectionCanBeTurnedOff) {
  ServerProcess::Config config;
  config.extra_flags = {"--reflection=false"};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  namespace reflection = grpc::reflection::v1alpha;
  std::unique_ptr<reflection::ServerReflection::Stub> stub = reflection::ServerReflection::NewStub(
      grpc::CreateChannel((*server)->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  auto stream = stub->ServerReflectionInfo(&context);
  reflection::ServerReflectionRequest request;
  request.set_list_services("");
  stream->Write(request);
  stream->WritesDone();
  reflection::ServerReflectionResponse response;
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNIMPLEMENTED);
  grpc::ClientContext list_context;
  v1::ListDomainsResponse domains;
  EXPECT_TRUE((*server)->stub()->ListDomains(&list_context, {}, &domains).ok());
}

// Every virtgated flag can come from VIRTGATE_<FLAG>; the command line wins.
TEST(VirtgatedEnvironmentTest, FlagsComeFromTheEnvironmentAndTheCommandLineWins) {
  auto read_only = [](std::vector<std::string> flags, std::vector<std::string> env) {
    ServerProcess::Config config;
    config.extra_flags = std::move(flags);
    config.extra_env = std::move(env);
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(config);
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return std::string("not started");
    grpc::ClientContext ctx;
    v1::HostInfo info;
    const grpc::Status s = (*server)->stub()->GetHostInfo(&ctx, {}, &info);
    return s.ok() ? std::string(info.connection().read_only() ? "read-only" : "read-write") : s.error_message();
  };
  EXPECT_EQ(read_only({}, {}), "read-only");
  EXPECT_EQ(read_only({}, {"VIRTGATE_READ_ONLY=false"}), "read-write");
  EXPECT_EQ(read_only({"--read_only=true"}, {"VIRTGATE_READ_ONLY=false"}), "read-only");

  const CommandResult bad = testing::RunCommand({testing::VirtgatedPath()}, {"VIRTGATE_POOL_SIZE=many"});
  EXPECT_EQ(bad.exit_code, 2) << bad.Describe();
  EXPECT_THAT(bad.err, HasSubstr("VIRTGATE_POOL_SIZE: Illegal value 'many'"));
}

// A plaintext virtgatectl against a TLS server hears only "connection
// closed" from gRPC: it says the server may require TLS and which options
// give it. The server's health is checked on its plaintext --health_listen.
TEST(VirtgatectlTlsHintTest, PlaintextAgainstATlsServerSuggestsTheTlsOptions) {
  TempDir certs;
  ASSERT_FALSE(certs.path().empty());
  const CommandResult made = testing::RunCommand(
      {std::string(VIRTGATE_SOURCE_DIR) + "/deploy/make-certs.sh", certs.path()});
  ASSERT_EQ(made.exit_code, 0) << made.Describe();
  ServerProcess::Config config;
  config.health_port = true;
  config.extra_flags = {absl::StrCat("--tls_cert=", certs.path(), "/server.crt"),
                        absl::StrCat("--tls_key=", certs.path(), "/server.key")};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = (*server)->target();

  for (const char* command : {"list", "health"}) {
    SCOPED_TRACE(command);
    const CommandResult r = RunCtl({"--server", target, command});
    EXPECT_EQ(r.exit_code, 1) << r.Describe();
    EXPECT_THAT(r.out, IsEmpty());
    EXPECT_EQ(r.err, absl::StrCat("virtgatectl: cannot reach ", target,
                                  ": connection closed (the server may require TLS: give "
                                  "--tls_ca FILE, and --tls_cert and --tls_key if it wants a "
                                  "client certificate)\n"))
        << r.Describe();
  }
  // As the hint says: with the CA, it works.
  CommandResult r = RunCtl({"--server", target, "--tls_ca", certs.path() + "/ca.crt", "host"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  // The health port needs no TLS.
  r = RunCtl({"--server", (*server)->health_target(), "health"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "SERVING\n");
}

// --- Without a server.

void ExpectUnreachable(const CommandResult& r, const std::string& target,
                       absl::string_view reason) {
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_THAT(r.out, IsEmpty());
  EXPECT_EQ(r.err, absl::StrCat("virtgatectl: cannot reach ", target, ": ", reason, "\n"))
      << r.Describe();
}

TEST(VirtgatectlUnreachableTest, MissingUnixSocket) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string target = absl::StrCat("unix:", dir.path(), "/no-such.sock");
  ExpectUnreachable(RunCtl({"--server", target, "list"}), target, "no such file or directory");
  // The domain asked for is not blamed when nothing answered.
  ExpectUnreachable(RunCtl({"--server", target, "get", "nope"}), target,
                    "no such file or directory");
}

TEST(VirtgatectlUnreachableTest, ClosedTcpPort) {
  // A socket bound to a port but not listening: connections to it are
  // refused, and holding it means no other process can take the port
  // while the test runs (unlike a port bound and closed again).
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0)
      << std::strerror(errno);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const std::string target = absl::StrCat("127.0.0.1:", ntohs(address.sin_port));

  ExpectUnreachable(RunCtl({"--server", target, "host"}), target, "connection refused");
  ExpectUnreachable(RunCtl({"health", "--server", target}), target, "connection refused");

  // The library reports the same, and marks it as a connection error.
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(target);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<bool> serving = (*client)->CheckHealth();
  EXPECT_EQ(serving.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(serving.status().message(), absl::StrCat("cannot reach ", target, ": connection refused"));
  EXPECT_TRUE(IsConnectionError(serving.status()));
  close(fd);
}

// --- Usage errors: exit 2 and one line, before any connection is made.

void ExpectUsageError(const CommandResult& r, absl::string_view mentions) {
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_THAT(r.out, IsEmpty());
  ASSERT_EQ(r.ErrLines().size(), 1u) << r.Describe();
  EXPECT_THAT(r.err, AllOf(StartsWith("virtgatectl: "), HasSubstr(mentions)));
}

TEST(VirtgatectlUsageTest, BadCommandLinesExitTwo) {
  // No server runs at this address; usage errors must not need one.
  const std::string server = "unix:/nonexistent/virtgate.sock";
  ExpectUsageError(RunCtl({"--server", server, "frobnicate"}), "frobnicate");
  ExpectUsageError(RunCtl({"--server", server, "list", "--state", "bogus"}), "bogus");
  ExpectUsageError(RunCtl({"--server", server, "list", "--no-such-option"}), "--no-such-option");
  ExpectUsageError(RunCtl({"--server", server, "list", "--active", "--inactive"}), "--inactive");
  ExpectUsageError(RunCtl({"--server", server, "list", "--page-size", "-1"}), "page-size");
  ExpectUsageError(RunCtl({"--server", server, "--timeout", "soon", "list"}), "soon");
  ExpectUsageError(RunCtl({"--server", server, "-o", "yaml", "list"}), "yaml");
  ExpectUsageError(RunCtl({"--server", server, "get"}), "get");
  ExpectUsageError(RunCtl({"--server", server, "get", "a", "b"}), "get");
  ExpectUsageError(RunCtl({"--server", server, "host", "--active"}), "--active");
  ExpectUsageError(RunCtl({"--server"}), "--server");
}

TEST(VirtgatectlUsageTest, HelpAndMissingCommand) {
  CommandResult r = RunCtl({"help"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  for (const char* word : {"list", "get", "host", "health", "--server", "--timeout", "--output",
                           "--tls_ca", "--state", "--page-size", "VIRTGATE_SERVER"}) {
    EXPECT_THAT(r.out, HasSubstr(word));
  }
  EXPECT_THAT(r.err, IsEmpty());

  r = RunCtl({"list", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.out, HasSubstr("Usage:"));

  r = RunCtl({});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_THAT(r.out, IsEmpty());
  EXPECT_THAT(r.err, HasSubstr("Usage:"));
}

// --- Server lifecycle as a CLI user sees it.

TEST(VirtgatedShutdownTest, SigtermExitsZeroAndStopsServing) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = (*server)->target();
  const CommandResult before = RunCtl({"--server", target, "health"});
  ASSERT_EQ(before.exit_code, 0) << before.Describe();

  absl::StatusOr<int> status = (*server)->Terminate();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << DescribeWaitStatus(*status) << "; log:\n" << (*server)->Log();

  const CommandResult after = RunCtl({"--server", target, "health"});
  EXPECT_EQ(after.exit_code, 1) << after.Describe();
  EXPECT_THAT(after.err, StartsWith(absl::StrCat("virtgatectl: cannot reach ", target, ": ")));
  EXPECT_EQ(after.ErrLines().size(), 1u) << after.Describe();
}

}  // namespace
}  // namespace virtgate
