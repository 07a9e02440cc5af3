// virtgated under a service manager (systemd's Type=notify): it says
// READY=1 only once its listener answers, and STOPPING=1 when SIGTERM
// arrives, on the datagram socket $NOTIFY_SOCKET names (the sd_notify
// protocol). The test is the service manager: it binds that socket itself,
// so no systemd is needed.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/server_process.h"

namespace virtgate {
namespace {

using testing::ServerProcess;
using testing::TempDir;

// A bound AF_UNIX datagram socket: what systemd listens on.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~NotifySocket() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

  // The next datagram, or "" if none came within `timeout`.
  std::string Receive(absl::Duration timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) != 1) return "";
    char buf[4096];
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, n) : "";
  }

 private:
  std::string path_;
  int fd_ = -1;
};

TEST(SdNotifyTest, ReadyOnlyOnceServingAndStoppingOnSigterm) {
  TempDir dir("virtgate-notify");
  ASSERT_TRUE(dir.ok());
  NotifySocket notify(dir.path() + "/notify");
  ASSERT_TRUE(notify.ok());
  const std::string target = absl::StrCat("unix:", dir.path(), "/virtgate.sock");

  // The moment READY=1 arrives, the listener must already answer: the
  // "manager" checks at once, while Start() below is still polling.
  std::string ready;
  std::string health_at_ready;
  std::thread manager([&] {
    ready = notify.Receive(absl::Seconds(60));
    if (ready.empty()) return;
    auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(testing::DeadlineIn(absl::Seconds(5)));
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status s = health->Check(&ctx, request, &response);
    health_at_ready = s.ok() ? grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
                                   response.status())
                             : s.error_message();
  });

  ServerProcess::Config config;
  config.target = target;
  config.extra_env = {absl::StrCat("NOTIFY_SOCKET=", dir.path(), "/notify")};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(config);
  manager.join();
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE(absl::StrContains(ready, "READY=1")) << "got: " << ready;
  EXPECT_TRUE(absl::StrContains(ready, "STATUS=serving")) << "got: " << ready;
  EXPECT_EQ(health_at_ready, "SERVING") << "READY=1 came before the listener answered";

  absl::StatusOr<int> status = (*server)->Terminate();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
  EXPECT_TRUE(absl::StrContains(notify.Receive(absl::Seconds(5)), "STOPPING=1"));
}

TEST(SdNotifyTest, NothingSentWithoutNotifySocket) {
  // Run by hand or in a container: no NOTIFY_SOCKET, no warning in the log.
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<int> status = (*server)->Terminate();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_FALSE(absl::StrContains((*server)->Log(), "sd_notify")) << (*server)->Log();
}

}  // namespace
}  // namespace virtgate
