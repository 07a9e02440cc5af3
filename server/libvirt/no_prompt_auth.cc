#include "server/libvirt/no_prompt_auth.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace virtgate {
namespace {

struct CredentialName {
  int type;
  const char* words;     // what libvirt asked for
  const char* constant;  // its VIR_CRED_* name
  const char* key;       // the auth file's key for it; null: none
};

// The auth file's keys are the ones libvirt looks up (remote driver, SASL:
// username, authname, password, realm; ssh transports: username, password).
constexpr CredentialName kNames[] = {
    {VIR_CRED_USERNAME, "a user name", "VIR_CRED_USERNAME", "username"},
    {VIR_CRED_AUTHNAME, "an authentication name", "VIR_CRED_AUTHNAME", "authname"},
    {VIR_CRED_LANGUAGE, "a language", "VIR_CRED_LANGUAGE", nullptr},
    {VIR_CRED_CNONCE, "a client nonce", "VIR_CRED_CNONCE", nullptr},
    {VIR_CRED_PASSPHRASE, "a password", "VIR_CRED_PASSPHRASE", "password"},
    {VIR_CRED_ECHOPROMPT, "an answer to a prompt", "VIR_CRED_ECHOPROMPT", nullptr},
    {VIR_CRED_NOECHOPROMPT, "a hidden answer to a prompt", "VIR_CRED_NOECHOPROMPT", nullptr},
    {VIR_CRED_REALM, "a realm", "VIR_CRED_REALM", "realm"},
    {VIR_CRED_EXTERNAL, "an external credential", "VIR_CRED_EXTERNAL", nullptr},
};

const CredentialName* Find(int type) {
  for (const CredentialName& n : kNames) {
    if (n.type == type) return &n;
  }
  return nullptr;
}

// The auth file's service name for `uri`: "ssh" for the libssh and libssh2
// transports (their username and password helpers), "libvirt" (SASL)
// otherwise.
const char* AuthService(absl::string_view uri) {
  const absl::string_view scheme = uri.substr(0, uri.find(':'));
  return absl::StrContains(scheme, "+libssh") ? "ssh" : "libvirt";
}

// The host libvirt looks the credentials up for: the URI's server, or
// "localhost" for a URI without one (a local socket).
std::string AuthHost(absl::string_view uri) {
  const size_t slashes = uri.find("://");
  if (slashes == absl::string_view::npos) return "localhost";
  absl::string_view authority = uri.substr(slashes + 3);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  const size_t at = authority.rfind('@');
  if (at != absl::string_view::npos) authority = authority.substr(at + 1);
  if (!authority.empty() && authority[0] == '[') {
    authority = authority.substr(1, authority.find(']') - 1);
  } else {
    authority = authority.substr(0, authority.find(':'));
  }
  return authority.empty() ? "localhost" : std::string(authority);
}

}  // namespace

NoPromptAuth::NoPromptAuth()
    // libvirt's default callback's types (the SASL mechanisms libvirt
    // allows depend on them).
    : offered_{VIR_CRED_AUTHNAME,  VIR_CRED_ECHOPROMPT,   VIR_CRED_REALM,
               VIR_CRED_PASSPHRASE, VIR_CRED_NOECHOPROMPT, VIR_CRED_EXTERNAL},
      auth_{offered_.data(), static_cast<unsigned int>(offered_.size()), &NoPromptAuth::Callback,
            this} {}

int NoPromptAuth::Callback(virConnectCredentialPtr cred, unsigned int ncred, void* cbdata) {
  auto* self = static_cast<NoPromptAuth*>(cbdata);
  for (unsigned int i = 0; i < ncred; ++i) {
    std::vector<int>& asked = self->asked_;
    if (std::find(asked.begin(), asked.end(), cred[i].type) == asked.end()) {
      asked.push_back(cred[i].type);
    }
  }
  // Nothing asked (everything came from the file): nothing to refuse.
  return ncred == 0 ? 0 : -1;
}

absl::Status NoPromptAuth::MissingCredentials(absl::StatusCode code, const std::string& uri,
                                              const std::string& auth_file) const {
  if (asked_.empty()) return absl::Status(code, absl::StrCat(uri, ": nothing was asked for"));
  std::vector<std::string> what;
  std::vector<std::string> keys;
  for (int type : asked_) {
    const CredentialName* n = Find(type);
    what.push_back(n != nullptr ? absl::StrCat(n->words, " (", n->constant, ")")
                                : absl::StrCat("credential type ", type));
    if (n != nullptr && n->key != nullptr) keys.push_back(absl::StrCat(n->key, "="));
  }
  const bool one = asked_.size() == 1;
  std::string listed = what.back();
  if (what.size() > 1) {
    listed = absl::StrCat(absl::StrJoin(what.begin(), what.end() - 1, ", "), " and ", listed);
  }
  std::string message =
      absl::StrCat(uri, ": libvirt asked for ", listed, ", and virtgated never prompts: ");
  if (keys.empty()) {
    absl::StrAppend(&message, "an auth file cannot give ", one ? "it" : "them",
                    "; use an authentication that needs no prompt");
  } else if (auth_file.empty()) {
    absl::StrAppend(&message, "give ", one ? "it" : "them", " (", absl::StrJoin(keys, ", "),
                    ") in an auth file (--libvirt_auth_file)");
  } else {
    const std::string host = AuthHost(uri);
    const char* service = AuthService(uri);
    absl::StrAppend(&message, "the auth file ", auth_file, " (--libvirt_auth_file) has no ",
                    absl::StrJoin(keys, ", "), " for host ", host, ": add ",
                    keys.size() == 1 ? "it" : "them",
                    " to the [credentials-NAME] group that [auth-", service, "-", host,
                    "] or [auth-", service, "-default] names");
  }
  return absl::Status(code, message);
}

}  // namespace virtgate
