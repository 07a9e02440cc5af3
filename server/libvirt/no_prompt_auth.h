// NoPromptAuth: the virConnectAuth that virtgated opens every libvirt
// connection with, in place of libvirt's virConnectAuthPtrDefault, whose
// callback prompts on stdin: in a daemon that blocks (a terminal or a pipe
// nobody writes) or sends empty names.
//
// It offers libvirt the same credential types as the default, so libvirt
// negotiates the same SASL mechanisms. libvirt fills what it can from the
// auth file (--libvirt_auth_file, see auth_file.h) before it calls back: the
// remote driver's SASL step looks up authname, username, password and realm
// there, and its virAuthGetUsername/virAuthGetPassword helpers (used by the
// libssh and libssh2 transports) do the same.
// Only what the file did not give reaches the callback, which answers
// nothing: it records which types were asked for and fails at once, so the
// open fails with VIR_ERR_AUTH_FAILED and MissingCredentials() says what to
// add.
//
// One per virConnectOpenAuth call: libvirt calls back on the opening
// thread, inside the call.
#pragma once

#include <libvirt/libvirt.h>

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace virtgate {

class NoPromptAuth {
 public:
  NoPromptAuth();
  NoPromptAuth(const NoPromptAuth&) = delete;
  NoPromptAuth& operator=(const NoPromptAuth&) = delete;

  // For virConnectOpenAuth; valid while this object lives.
  virConnectAuthPtr get() { return &auth_; }

  // Whether libvirt asked for anything (the file left something out).
  bool asked() const { return !asked_.empty(); }

  // After an open that failed while asked(): `code`, with a message that
  // names each credential asked for, its VIR_CRED_* type and where to give
  // it, e.g. "qemu+tcp://host/system: libvirt asked for a password
  // (VIR_CRED_PASSPHRASE), and virtgated never prompts: give it (password=)
  // in an auth file (--libvirt_auth_file)". Never contains a secret: the
  // callback sees none.
  absl::Status MissingCredentials(absl::StatusCode code, const std::string& uri,
                                  const std::string& auth_file) const;

 private:
  static int Callback(virConnectCredentialPtr cred, unsigned int ncred, void* cbdata);

  std::vector<int> offered_;
  virConnectAuth auth_;
  std::vector<int> asked_;  // VIR_CRED_* types, each once, in the order asked
};

}  // namespace virtgate
