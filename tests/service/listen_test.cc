// --listen: parsed and checked once, with messages that name the problem;
// a TCP port or unix socket another server listens on is refused, never
// shared or taken over. In-process servers on test:///default.
#include <grpcpp/grpcpp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/rpc/listen_address.h"
#include "server/server.h"
#include "tests/support/files.h"

namespace virtgate {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

absl::StatusOr<std::unique_ptr<Server>> Start(const std::string& listen) {
  Server::Options o;
  o.libvirt_uri = "test:///default";
  o.listen = listen;
  return Server::BuildAndStart(o);
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// SERVING on `target`, through a new channel.
bool Serving(const std::string& target) {
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckResponse response;
  return health->Check(&ctx, {}, &response).ok() &&
         response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

TEST(ListenAddressTest, ParsesWhatWeServeOnAndRefusesTheRest) {
  absl::StatusOr<ListenAddress> a = ParseListenAddress("127.0.0.1:50051");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 50051);
  EXPECT_TRUE(a->loopback);
  a = ParseListenAddress("[::1]:0");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->loopback);
  a = ParseListenAddress("[::]:50051");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_FALSE(a->loopback);
  a = ParseListenAddress("unix:/run/virtgate/virtgate.sock");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->unix_socket);
  EXPECT_EQ(a->path, "/run/virtgate/virtgate.sock");

  const struct {
    std::string listen;
    std::string says;
  } bad[] = {
      {"127.0.0.1:99999", "port \"99999\" is not a number from 0 to 65535"},
      {"127.0.0.1:-1", "port \"-1\""},
      {"127.0.0.1:", "port \"\""},
      {"unix:", "a unix socket needs an absolute path"},
      {"unix:relative.sock", "a unix socket needs an absolute path"},
      {absl::StrCat("unix:/", std::string(200, 'x')), "a unix socket path is at most 107 bytes"},
      {"garbage", "want HOST:PORT, [IPV6]:PORT or unix:/ABSOLUTE/PATH"},
      {"", "want HOST:PORT"},
      {":50051", "no host"},
      {"::1:50051", "an IPv6 address goes in brackets"},
      {"[nope]:1", "\"nope\" is not an IPv6 address"},
      {"bad host:1", "\"bad host\" is not a host name or address"},
  };
  for (const auto& b : bad) {
    SCOPED_TRACE(b.listen);
    a = ParseListenAddress(b.listen);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(a.status()), HasSubstr(b.says));
    // The server refuses the same way, before starting anything.
    absl::StatusOr<std::unique_ptr<Server>> server = Start(b.listen);
    ASSERT_FALSE(server.ok());
    EXPECT_THAT(Message(server.status()), HasSubstr(b.says));
  }
}

TEST(ListenTest, TakenTcpPortIsRefusedNotShared) {
  absl::StatusOr<std::unique_ptr<Server>> first = Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = absl::StrCat("127.0.0.1:", (*first)->port());
  absl::StatusOr<std::unique_ptr<Server>> second = Start(taken);
  ASSERT_FALSE(second.ok()) << "a second server listens on " << taken;
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Message(second.status()),
              HasSubstr(absl::StrCat("cannot listen on ", taken, ": address in use")));
  EXPECT_TRUE(Serving((*first)->address()));
}

TEST(ListenTest, LiveUnixSocketIsNeverTakenOver) {
  TempDir dir("vglisten");
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/virtgate.sock";
  absl::StatusOr<std::unique_ptr<Server>> first = Start("unix:" + path);
  ASSERT_TRUE(first.ok()) << first.status();
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u) << "owner and group may connect, nobody else";

  absl::StatusOr<std::unique_ptr<Server>> second = Start("unix:" + path);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(second.status()), HasSubstr("another server is listening there"));
  EXPECT_TRUE(Serving("unix:" + path)) << "the first server lost its socket";
}

// The README's first recipe listened in /run/virtgate, which only the
// systemd unit (RuntimeDirectory=) makes: the error says so, not "address
// in use" or "permission".
TEST(ListenTest, UnixSocketInAMissingDirectorySaysTheDirectoryIsMissing) {
  TempDir dir("vglisten");
  ASSERT_FALSE(dir.path().empty());
  const std::string missing = dir.path() + "/virtgate";
  absl::StatusOr<std::unique_ptr<Server>> server = Start("unix:" + missing + "/virtgate.sock");
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(Message(server.status()),
              HasSubstr(absl::StrCat("--listen: cannot listen on unix:", missing,
                                     "/virtgate.sock: directory ", missing,
                                     " does not exist; create it first (mkdir -p ", missing)));
  // A file where the directory should be.
  { std::FILE* f = std::fopen(missing.c_str(), "w"); ASSERT_NE(f, nullptr); std::fclose(f); }
  server = Start("unix:" + missing + "/virtgate.sock");
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(Message(server.status()), HasSubstr(missing + " is not a directory"));
}

TEST(ListenTest, ListenGroupOwnsTheUnixSocket) {
  TempDir dir("vglisten");
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/virtgate.sock";
  Server::Options o;
  o.libvirt_uri = "test:///default";
  o.listen = "unix:" + path;
  o.listen_group = "daemon";  // gid 1 on Debian
  absl::StatusOr<std::unique_ptr<Server>> server = Server::BuildAndStart(o);
  ASSERT_TRUE(server.ok()) << server.status();
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, 1u);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  server->reset();

  o.listen_group = "no-such-group-here";
  server = Server::BuildAndStart(o);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(Message(server.status()), HasSubstr("--listen_group: no group \"no-such-group-here\""));
  o.listen = "127.0.0.1:0";
  server = Server::BuildAndStart(o);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(Message(server.status()), HasSubstr("applies to a unix socket"));
}

TEST(ListenTest, StaleUnixSocketIsReplacedAndOtherFilesAreNot) {
  TempDir dir("vglisten");
  ASSERT_FALSE(dir.path().empty());
  // A socket nobody listens on any more (its server died without removing it).
  const std::string stale = dir.path() + "/stale.sock";
  {
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, stale.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    close(fd);
  }
  absl::StatusOr<std::unique_ptr<Server>> server = Start("unix:" + stale);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE(Serving("unix:" + stale));
  server->reset();

  const std::string link = dir.path() + "/link.sock";
  ASSERT_EQ(symlink(stale.c_str(), link.c_str()), 0);
  server = Start("unix:" + link);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(Message(server.status()), HasSubstr("it is a symbolic link"));

  const std::string file = dir.path() + "/file.sock";
  { std::FILE* f = std::fopen(file.c_str(), "w"); ASSERT_NE(f, nullptr); std::fclose(f); }
  server = Start("unix:" + file);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(Message(server.status()), HasSubstr("a file that is not a socket is in the way"));
}

}  // namespace
}  // namespace virtgate
