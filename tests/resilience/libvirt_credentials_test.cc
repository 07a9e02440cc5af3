// libvirt credentials (--libvirt_auth_file), end to end: virtgated runs as
// its own process against a real libvirtd that wants a SASL login
// (SCRAM-SHA-256, a sasldb of its own). virtgated's stdin is a pipe that
// nobody writes, so a password prompt would hang it instead of failing: each
// test that expects a failure also expects it promptly, with a message, and
// every test checks that no password reaches the log or a reply.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/support/child_process.h"
#include "tests/support/command.h"
#include "tests/support/files.h"
#include "tests/support/private_libvirtd.h"
#include "tests/support/server_process.h"
#include "tests/support/wait_for.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {
namespace {

using testing::PrivateLibvirtd;
using testing::ServerProcess;
using testing::TempDir;

constexpr char kUser[] = "virtgate-test";
// Distinctive, so a search of the log cannot miss them or match by chance.
constexpr char kPassword[] = "right-Pw-7f3a9c41";
constexpr char kWrongPassword[] = "wrong-Pw-51e0d2b8";

// Writes a libvirt auth.conf for kUser with `password` (none: authname
// only) into `dir`, with `mode`; returns its path.
std::string WriteAuthFile(const TempDir& dir, const std::string& name,
                          std::optional<std::string> password, mode_t mode) {
  const std::string path = absl::StrCat(dir.path(), "/", name);
  std::ofstream out(path);
  out << "[credentials-virtgate]\nauthname=" << kUser << "\n";
  if (password) out << "password=" << *password << "\n";
  out << "\n[auth-libvirt-localhost]\ncredentials=virtgate\n";
  out.close();
  chmod(path.c_str(), mode);
  return path;
}

void ExpectNoPassword(const std::string& text, const std::string& where) {
  EXPECT_FALSE(absl::StrContains(text, kPassword)) << "the password is in " << where;
  EXPECT_FALSE(absl::StrContains(text, kWrongPassword)) << "a password is in " << where;
}

struct Answer {
  grpc::StatusCode code;
  std::string message;
  absl::Duration took;
};

class LibvirtCredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    PrivateLibvirtd::Options options;
    options.sasl = PrivateLibvirtd::SaslUser{kUser, kPassword};
    absl::StatusOr<std::unique_ptr<PrivateLibvirtd>> d = PrivateLibvirtd::Start(options);
    if (d.status().code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << d.status();
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
  }

  // virtgated with `flags`; returns once health answers (SERVING if
  // `serving`). Its HOME-based auth file search finds nothing of ours.
  void StartServer(std::vector<std::string> flags, bool serving) {
    ServerProcess::Config config;
    config.libvirt_uri = daemon_->uri();
    config.extra_flags = std::move(flags);
    config.extra_flags.push_back("--reconnect_max_backoff=500ms");
    config.wait_serving = serving;
    config.stdin_pipe = true;
    config.stop_grace = absl::Seconds(5);
    config.extra_env = {absl::StrCat("XDG_CONFIG_HOME=", dir_.path())};
    absl::StatusOr<std::unique_ptr<ServerProcess>> s = ServerProcess::Start(std::move(config));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
  }

  Answer List() {
    grpc::ClientContext ctx;
    ctx.set_deadline(testing::DeadlineIn(absl::Seconds(10)));
    v1::ListDomainsRequest req;
    v1::ListDomainsResponse response;
    const absl::Time start = absl::Now();
    grpc::Status s = server_->stub()->ListDomains(&ctx, req, &response);
    listed_ = response;
    return {s.error_code(), s.error_message(), absl::Now() - start};
  }

  v1::HostInfo HostInfo() {
    grpc::ClientContext ctx;
    ctx.set_deadline(testing::DeadlineIn(absl::Seconds(5)));
    v1::HostInfo info;
    grpc::Status s = server_->stub()->GetHostInfo(&ctx, {}, &info);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return info;
  }

  // Refused calls, NOT_SERVING, and a message with `expected` in it, at
  // once: libvirt answered (or our callback refused) within the server's
  // first-attempt wait, nothing waits on stdin. No password in the replies.
  void ExpectRefusedSaying(const std::vector<std::string>& expected) {
    EXPECT_EQ(server_->HealthStatus(), "NOT_SERVING");
    const Answer answer = List();
    EXPECT_EQ(answer.code, grpc::StatusCode::UNAVAILABLE) << answer.message;
    EXPECT_LT(answer.took, absl::Seconds(5)) << "the call waited; " << answer.message;
    for (const std::string& words : expected) {
      EXPECT_TRUE(absl::StrContains(answer.message, words))
          << "no \"" << words << "\" in: " << answer.message;
    }
    const v1::HostInfo info = HostInfo();
    EXPECT_FALSE(info.connection().up());
    for (const std::string& words : expected) {
      EXPECT_TRUE(absl::StrContains(info.connection().last_error(), words))
          << "no \"" << words << "\" in last_error: " << info.connection().last_error();
    }
    ExpectNoPassword(answer.message, "the call's message");
    ExpectNoPassword(info.DebugString(), "GetHostInfo");
  }

  // SIGTERM: exits 0 in time (no thread is stuck reading stdin); then the
  // whole log is searched for the passwords.
  void Stop() {
    absl::StatusOr<int> ended = server_->Terminate();
    ASSERT_TRUE(ended.ok()) << ended.status();
    EXPECT_EQ(testing::DescribeWaitStatus(*ended), "exit 0") << server_->Log();
    ExpectNoPassword(server_->Log(), "virtgated's log");
  }

  TempDir dir_{"virtgate-creds"};
  std::unique_ptr<PrivateLibvirtd> daemon_;
  std::unique_ptr<ServerProcess> server_;
  v1::ListDomainsResponse listed_;
};

TEST_F(LibvirtCredentialsTest, RightPasswordInAPrivateAuthFileServes) {
  const std::string auth = WriteAuthFile(dir_, "auth.conf", kPassword, 0600);
  StartServer({absl::StrCat("--libvirt_auth_file=", auth)}, /*serving=*/true);
  EXPECT_EQ(server_->HealthStatus(), "SERVING");
  const Answer answer = List();
  ASSERT_EQ(answer.code, grpc::StatusCode::OK) << answer.message;
  ASSERT_EQ(listed_.domains_size(), 1) << listed_.DebugString();
  EXPECT_EQ(listed_.domains(0).name(), "test");  // the test driver's own
  const v1::HostInfo info = HostInfo();
  EXPECT_TRUE(info.connection().up());
  // The configured URI, not libvirt's with the authfile= we add.
  EXPECT_EQ(info.uri(), daemon_->uri());
  ExpectNoPassword(info.DebugString(), "GetHostInfo");
  Stop();
}

TEST_F(LibvirtCredentialsTest, WrongPasswordIsNotServingAndSaysAuthenticationFailed) {
  const std::string auth = WriteAuthFile(dir_, "auth.conf", kWrongPassword, 0600);
  StartServer({absl::StrCat("--libvirt_auth_file=", auth)}, /*serving=*/false);
  ExpectRefusedSaying({"authentication failed", daemon_->uri()});
  // libvirt reads the file at each attempt: fixed, it serves, no restart.
  WriteAuthFile(dir_, "auth.conf", kPassword, 0600);
  EXPECT_TRUE(testing::WaitFor([&] { return server_->HealthStatus() == "SERVING"; },
                               absl::Seconds(20)))
      << server_->Log();
  EXPECT_EQ(List().code, grpc::StatusCode::OK);
  Stop();
}

TEST_F(LibvirtCredentialsTest, NoAuthFileNamesTheMissingCredentials) {
  if (access("/etc/libvirt/auth.conf", F_OK) == 0) {
    GTEST_SKIP() << "/etc/libvirt/auth.conf exists: libvirt would read it";
  }
  StartServer({}, /*serving=*/false);
  ExpectRefusedSaying({"an authentication name (VIR_CRED_AUTHNAME)",
                       "a password (VIR_CRED_PASSPHRASE)", "never prompts",
                       "--libvirt_auth_file"});
  Stop();
}

TEST_F(LibvirtCredentialsTest, AuthFileWithoutPasswordNamesThePassword) {
  const std::string auth = WriteAuthFile(dir_, "auth.conf", std::nullopt, 0600);
  StartServer({absl::StrCat("--libvirt_auth_file=", auth)}, /*serving=*/false);
  ExpectRefusedSaying({"libvirt asked for a password (VIR_CRED_PASSPHRASE), and",
                       absl::StrCat("the auth file ", auth), "[auth-libvirt-localhost]"});
  Stop();
  EXPECT_FALSE(absl::StrContains(server_->Log(), "VIR_CRED_AUTHNAME"))
      << "the file gave the authentication name";
}

// An auth file anyone else could read (or that is not what it should be)
// stops virtgated before it serves; no libvirtd is needed for that.
class UnsafeAuthFileTest : public ::testing::Test {
 protected:
  // virtgated's exit and what it printed.
  testing::CommandResult Run(const std::string& auth_file) {
    return testing::RunCommand({testing::VirtgatedPath(), "--libvirt_uri=test:///default",
                                absl::StrCat("--listen=unix:", dir_.path(), "/sock"),
                                absl::StrCat("--libvirt_auth_file=", auth_file)});
  }
  void ExpectRefused(const std::string& auth_file, const std::string& why) {
    const testing::CommandResult r = Run(auth_file);
    EXPECT_EQ(r.exit_code, 1) << r.Describe();
    EXPECT_TRUE(absl::StrContains(
        r.err, absl::StrCat("virtgated: --libvirt_auth_file \"", auth_file, "\": ", why)))
        << r.Describe();
    EXPECT_FALSE(absl::StrContains(r.err, "serving")) << r.Describe();
    ExpectNoPassword(r.out + r.err, "virtgated's output");
  }

  TempDir dir_{"virtgate-creds"};
};

TEST_F(UnsafeAuthFileTest, GroupOrWorldReadableMissingOrNotAFileIsRefused) {
  ASSERT_TRUE(dir_.ok());
  {
    SCOPED_TRACE("0644");
    ExpectRefused(WriteAuthFile(dir_, "world.conf", kPassword, 0644), "mode 0644 lets group or "
                  "others at it; it holds passwords: chmod 600 it");
  }
  {
    SCOPED_TRACE("0640");
    ExpectRefused(WriteAuthFile(dir_, "group.conf", kPassword, 0640), "mode 0640");
  }
  {
    SCOPED_TRACE("0602");
    ExpectRefused(WriteAuthFile(dir_, "other-write.conf", kPassword, 0602), "mode 0602");
  }
  {
    SCOPED_TRACE("missing");
    ExpectRefused(absl::StrCat(dir_.path(), "/missing.conf"), "no such file");
  }
  {
    SCOPED_TRACE("directory");
    ExpectRefused(dir_.path(), "not a regular file");
  }
  {
    SCOPED_TRACE("relative");
    ExpectRefused("auth.conf", "must be an absolute path");
  }
  {
    SCOPED_TRACE("0600 is accepted (control)");
    const std::string ok = WriteAuthFile(dir_, "ok.conf", kPassword, 0600);
    // The same command serves, so the refusals above were about the file.
    ServerProcess::Config config;
    config.extra_flags = {absl::StrCat("--libvirt_auth_file=", ok)};
    absl::StatusOr<std::unique_ptr<ServerProcess>> s = ServerProcess::Start(std::move(config));
    ASSERT_TRUE(s.ok()) << s.status();
    ExpectNoPassword((*s)->Log(), "virtgated's log");
  }
}

TEST_F(UnsafeAuthFileTest, FileOwnedByAnotherUserIsRefused) {
  ASSERT_TRUE(dir_.ok());
  if (geteuid() != 0) GTEST_SKIP() << "giving a file to another user needs root";
  const std::string auth = WriteAuthFile(dir_, "theirs.conf", kPassword, 0600);
  ASSERT_EQ(chown(auth.c_str(), 65534, 65534), 0);  // nobody
  ExpectRefused(auth, "owned by uid 65534, not by the user virtgated runs as (uid 0)");
}

}  // namespace
}  // namespace virtgate
