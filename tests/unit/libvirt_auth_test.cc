// The parts of libvirt credentials that need no libvirtd: the auth file's
// path on the URI, the startup checks that the end-to-end test
// (libvirt_credentials_test) cannot reach from outside, and the words of
// NoPromptAuth's refusal, with libvirt's callback called as libvirt calls it.
#include <libvirt/libvirt.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/libvirt/auth_file.h"
#include "server/libvirt/no_prompt_auth.h"
#include "tests/support/files.h"

namespace virtgate {
namespace {

TEST(UriWithAuthFileTest, AddsTheParameterPercentEncoded) {
  EXPECT_EQ(UriWithAuthFile("qemu:///system", "/etc/virtgate/auth.conf"),
            "qemu:///system?authfile=/etc/virtgate/auth.conf");
  EXPECT_EQ(UriWithAuthFile("test+unix:///default?socket=/run/s", "/a/b"),
            "test+unix:///default?socket=/run/s&authfile=/a/b");
  EXPECT_EQ(UriWithAuthFile("qemu+tcp://h/system?", "/a"), "qemu+tcp://h/system?authfile=/a");
  EXPECT_EQ(UriWithAuthFile("qemu:///system", "/a b&c=d%e#f"),
            "qemu:///system?authfile=/a%20b%26c%3Dd%25e%23f");
  EXPECT_EQ(UriWithAuthFile("qemu:///system#frag", "/a"), "qemu:///system?authfile=/a#frag");
}

class CheckAuthFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    path_ = dir_.path() + "/auth.conf";
    std::ofstream(path_) << "[credentials-x]\nauthname=a\npassword=secret-unit-pw\n";
    ASSERT_EQ(chmod(path_.c_str(), 0600), 0);
    unsetenv("LIBVIRT_AUTH_FILE");
  }
  void TearDown() override { unsetenv("LIBVIRT_AUTH_FILE"); }

  testing::TempDir dir_{"virtgate-auth-unit"};
  std::string path_;
};

TEST_F(CheckAuthFileTest, AcceptsAPrivateFile) {
  EXPECT_TRUE(CheckAuthFile(path_, "qemu:///system").ok());
}

TEST_F(CheckAuthFileTest, RefusesAUriWithAnAuthFileOfItsOwn) {
  const absl::Status s = CheckAuthFile(path_, "qemu:///system?AuthFile=/other");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "names an authfile= of its own")) << s;
}

TEST_F(CheckAuthFileTest, RefusesAnotherFileInLibvirtAuthFile) {
  setenv("LIBVIRT_AUTH_FILE", "/elsewhere/auth.conf", 1);
  const absl::Status s = CheckAuthFile(path_, "qemu:///system");
  EXPECT_TRUE(absl::StrContains(s.message(), "LIBVIRT_AUTH_FILE=\"/elsewhere/auth.conf\"")) << s;
  setenv("LIBVIRT_AUTH_FILE", path_.c_str(), 1);  // the same file: no conflict
  EXPECT_TRUE(CheckAuthFile(path_, "qemu:///system").ok());
}

TEST_F(CheckAuthFileTest, NeverQuotesTheContents) {
  ASSERT_EQ(chmod(path_.c_str(), 0644), 0);
  const absl::Status s = CheckAuthFile(path_, "qemu:///system");
  EXPECT_TRUE(absl::StrContains(s.message(), "mode 0644")) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), "secret-unit-pw")) << s;
}

// Calls the callback as libvirt does when the auth file left `types` out.
void Ask(NoPromptAuth* auth, std::initializer_list<int> types) {
  std::vector<virConnectCredential> creds;
  for (int type : types) {
    virConnectCredential c{};
    c.type = type;
    c.prompt = "Please enter your password";
    creds.push_back(c);
  }
  virConnectAuthPtr a = auth->get();
  EXPECT_EQ(a->cb(creds.data(), creds.size(), a->cbdata), -1);
  for (const virConnectCredential& c : creds) EXPECT_EQ(c.result, nullptr);
}

TEST(NoPromptAuthTest, OffersWhatLibvirtsDefaultOffers) {
  NoPromptAuth auth;
  virConnectAuthPtr ours = auth.get();
  ASSERT_EQ(ours->ncredtype, virConnectAuthPtrDefault->ncredtype);
  for (unsigned int i = 0; i < ours->ncredtype; ++i) {
    EXPECT_EQ(ours->credtype[i], virConnectAuthPtrDefault->credtype[i]);
  }
  // Nothing left to ask: nothing refused.
  EXPECT_EQ(ours->cb(nullptr, 0, ours->cbdata), 0);
  EXPECT_FALSE(auth.asked());
}

TEST(NoPromptAuthTest, NamesWhatWasAskedAndWhereToGiveIt) {
  NoPromptAuth none;
  Ask(&none, {VIR_CRED_AUTHNAME, VIR_CRED_PASSPHRASE});
  EXPECT_EQ(none.MissingCredentials(absl::StatusCode::kUnauthenticated, "qemu+tcp://h/system", "")
                .message(),
            "qemu+tcp://h/system: libvirt asked for an authentication name (VIR_CRED_AUTHNAME) "
            "and a password (VIR_CRED_PASSPHRASE), and virtgated never prompts: give them "
            "(authname=, password=) in an auth file (--libvirt_auth_file)");

  NoPromptAuth file;
  Ask(&file, {VIR_CRED_PASSPHRASE});
  Ask(&file, {VIR_CRED_PASSPHRASE});  // asked again: named once
  const absl::Status s = file.MissingCredentials(
      absl::StatusCode::kUnauthenticated, "qemu+tcp://user@[::1]:16509/system", "/etc/a.conf");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(s.message(),
            "qemu+tcp://user@[::1]:16509/system: libvirt asked for a password "
            "(VIR_CRED_PASSPHRASE), and virtgated never prompts: the auth file /etc/a.conf "
            "(--libvirt_auth_file) has no password= for host ::1: add it to the "
            "[credentials-NAME] group that [auth-libvirt-::1] or [auth-libvirt-default] names");

  NoPromptAuth ssh;
  Ask(&ssh, {VIR_CRED_AUTHNAME, VIR_CRED_PASSPHRASE});
  EXPECT_TRUE(absl::StrContains(
      ssh.MissingCredentials(absl::StatusCode::kUnauthenticated,
                             "qemu+libssh2://admin@kvm1.example/system", "/a.conf")
          .message(),
      "has no authname=, password= for host kvm1.example: add them to the [credentials-NAME] "
      "group that [auth-ssh-kvm1.example] or [auth-ssh-default] names"));

  NoPromptAuth prompt;
  Ask(&prompt, {VIR_CRED_ECHOPROMPT});
  EXPECT_TRUE(absl::StrContains(
      prompt.MissingCredentials(absl::StatusCode::kUnauthenticated, "x", "").message(),
      "an answer to a prompt (VIR_CRED_ECHOPROMPT), and virtgated never prompts: an auth file "
      "cannot give it"));
}

}  // namespace
}  // namespace virtgate
