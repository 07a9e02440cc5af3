// Layer 2 of the test support (libvirt only, no server code).
//
// PrivateLibvirtd: a real libvirtd started by a test on a private socket,
// serving libvirt's test driver, so events cross processes and the daemon
// can be killed, stopped (SIGSTOP) and restarted on the same socket.
//
// It touches no root-owned socket: unix_sock_dir is a fresh temp dir,
// authentication is off (or a SASL login of its own, Options::sasl),
// TCP/TLS listeners are off, and LIBVIRT_DRIVER_DIR points at an empty dir
// so no hypervisor driver (QEMU, LXC, …) loads.
// The daemon is our child; it is stopped by pid, and only it. It gets
// SIGKILL if the thread that started it exits, so start it from the main
// thread (gtest's SetUpTestSuite and test bodies are).
#pragma once

#include <libvirt/libvirt.h>
#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/libvirt/handles.h"
#include "tests/support/command.h"

namespace virtgate::testing {

class PrivateLibvirtd {
 public:
  // A user that must log in with SASL (SCRAM-SHA-256, checked against a
  // sasldb of the daemon's own) on both sockets.
  struct SaslUser {
    std::string name;
    std::string password;
  };
  struct Options {
    // false: only prepares its directory and URI: Restart() starts it (a
    // libvirtd that appears after virtgated).
    bool running = true;
    std::optional<SaslUser> sasl;  // unset: no authentication
  };

  // FAILED_PRECONDITION (say what is missing) when libvirtd, or for SASL
  // saslpasswd2 (sasl2-bin) or the SCRAM module (libsasl2-modules), is not
  // installed.
  static absl::StatusOr<std::unique_ptr<PrivateLibvirtd>> Start(Options options);
  static absl::StatusOr<std::unique_ptr<PrivateLibvirtd>> Start(bool running = true) {
    return Start(Options{running, std::nullopt});
  }
  ~PrivateLibvirtd();  // stops the daemon and removes its temp dir

  // test+unix:///default?socket=<dir>/libvirt-sock (no credentials in it)
  const std::string& uri() const { return uri_; }
  // A read-write connection of the test's own (null if it does not open):
  // how a test changes domains, as another tool would. Under SASL it logs
  // in from an auth file of the daemon's directory, never prompting.
  ConnectHandle Connect() const;
  pid_t pid() const { return pid_; }
  // Its private directory (socket, config, log); removed with it.
  const std::string& dir() const { return dir_; }
  std::string Log() const;

  // Runs `virsh -q -c <uri> args...` (/usr/bin/virsh, libvirt-clients).
  CommandResult Virsh(std::vector<std::string> args) const;
  // Writes TestDomainXml(name, uuid) into dir(); returns its path.
  std::string WriteDomainXml(const std::string& name, const std::string& uuid = "") const;

  // SIGKILL and reap (the test driver's domains die with it).
  void Kill();
  // (Re)starts it on the same socket (SIGKILL first if running); waits until
  // it answers.
  absl::Status Restart();
  void Pause();   // SIGSTOP
  void Resume();  // SIGCONT

 private:
  PrivateLibvirtd() = default;
  absl::Status Spawn();

  std::string dir_;
  std::string uri_;
  std::string own_uri_;  // uri_, plus the auth file of its own under SASL
  bool sasl_ = false;
  pid_t pid_ = -1;
};

// Starts a PrivateLibvirtd into `*daemon` and opens `*admin`, a read-write
// connection of the test's own to it.
absl::Status StartWithAdmin(std::unique_ptr<PrivateLibvirtd>* daemon, ConnectHandle* admin);

}  // namespace virtgate::testing
