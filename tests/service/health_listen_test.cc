// --health_listen: grpc.health.v1 alone, in plaintext, on an address of its
// own (what a kubelet gRPC probe can reach when the API port wants mTLS).
// A client there gets the API port's statuses and nothing else: the API and
// reflection are UNIMPLEMENTED. In-process servers on test:///default.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/rpc/health_reporter.h"
#include "server/server.h"
#include "tests/support/files.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;
using testing::TempDir;

absl::StatusOr<std::unique_ptr<Server>> Start(const std::string& health_listen,
                                              const std::string& listen = "127.0.0.1:0") {
  Server::Options o;
  o.libvirt_uri = "test:///default";
  o.listen = listen;
  o.health_listen = health_listen;
  return Server::BuildAndStart(o);
}

std::shared_ptr<grpc::Channel> Channel(const std::string& target) {
  return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
}

std::chrono::system_clock::time_point Deadline() {
  return absl::ToChronoTime(absl::Now() + absl::Seconds(10));
}

// What Health.Check says for `service` on `target`: the status's name, or
// the call's error code.
std::string Check(const std::string& target, const std::string& service) {
  auto health = grpc::health::v1::Health::NewStub(Channel(target));
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  const grpc::Status s = health->Check(&ctx, request, &response);
  if (!s.ok()) return absl::StrCat("error ", s.error_code());
  return HealthCheckResponse::ServingStatus_Name(response.status());
}

// The status code of a call to `method` with an empty request, whatever the
// method: a server that does not serve it answers UNIMPLEMENTED.
grpc::StatusCode CallAnyway(const std::string& target, const std::string& method) {
  grpc::GenericStub stub(Channel(target));
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  grpc::Slice empty_message("");  // a valid (empty) message, which a default ByteBuffer is not
  grpc::ByteBuffer request(&empty_message, 1);
  grpc::ByteBuffer response;
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  done.WaitForNotification();
  return status.error_code();
}

TEST(HealthListenTest, ServesTheSameHealthAndNothingElse) {
  absl::StatusOr<std::unique_ptr<Server>> server = Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string health = (*server)->health_address();
  ASSERT_FALSE(health.empty());
  EXPECT_NE(health, (*server)->address());

  for (const std::string service : {"", "virtgate.v1.Hypervisor", kEventsHealthService}) {
    SCOPED_TRACE(service);
    EXPECT_EQ(Check(health, service), "SERVING");
    EXPECT_EQ(Check(health, service), Check((*server)->address(), service));
  }
  EXPECT_EQ(Check(health, "no.such.Service"), absl::StrCat("error ", grpc::StatusCode::NOT_FOUND));

  // Not the API, not reflection (which the API port serves).
  auto api = v1::Hypervisor::NewStub(Channel(health));
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  v1::ListDomainsResponse domains;
  EXPECT_EQ(api->ListDomains(&ctx, {}, &domains).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  const std::string reflection =
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
  EXPECT_EQ(CallAnyway(health, reflection), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_NE(CallAnyway((*server)->address(), reflection), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(CallAnyway(health, "/virtgate.v1.Hypervisor/GetHostInfo"),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST(HealthListenTest, UnixSocket) {
  TempDir dir("vghealth");
  ASSERT_FALSE(dir.path().empty());
  const std::string health = absl::StrCat("unix:", dir.path(), "/health.sock");
  absl::StatusOr<std::unique_ptr<Server>> server = Start(health);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->health_address(), health);
  EXPECT_EQ(Check(health, "virtgate.v1.Hypervisor"), "SERVING");
}

// On shutdown the health port says NOT_SERVING, like the API port: a watch
// there hears it at once and ends; then the port closes.
TEST(HealthListenTest, ShutdownSaysNotServingThere) {
  absl::StatusOr<std::unique_ptr<Server>> server = Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string health = (*server)->health_address();
  auto stub = grpc::health::v1::Health::NewStub(Channel(health));
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  auto updates = stub->Watch(&ctx, HealthCheckRequest());
  HealthCheckResponse update;
  ASSERT_TRUE(updates->Read(&update));
  ASSERT_EQ(update.status(), HealthCheckResponse::SERVING);

  (*server)->Shutdown(absl::Seconds(5));
  ASSERT_TRUE(updates->Read(&update));
  EXPECT_EQ(update.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(updates->Read(&update));
  const grpc::Status end = updates->Finish();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAVAILABLE) << end.error_message();
  EXPECT_EQ(Check(health, ""), absl::StrCat("error ", grpc::StatusCode::UNAVAILABLE))
      << "the health port still answers after shutdown";
}

TEST(HealthListenTest, ErrorsNameTheFlag) {
  absl::StatusOr<std::unique_ptr<Server>> server = Start("garbage");
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("--health_listen \"garbage\""));

  // A port another server holds.
  absl::StatusOr<std::unique_ptr<Server>> first = Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  server = Start((*first)->address());
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()),
              HasSubstr(absl::StrCat("--health_listen: cannot listen on ", (*first)->address(),
                                     ": address in use")));

  // The API's own address.
  server = Start("127.0.0.1:50999", "127.0.0.1:50999");
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("--health_listen must differ"));

  // A unix socket whose directory is missing.
  TempDir dir("vghealth");
  ASSERT_FALSE(dir.path().empty());
  server = Start(absl::StrCat("unix:", dir.path(), "/none/health.sock"));
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()),
              HasSubstr(absl::StrCat("--health_listen: cannot listen on unix:", dir.path(),
                                     "/none/health.sock: directory ", dir.path(),
                                     "/none does not exist")));
}

}  // namespace
}  // namespace virtgate
