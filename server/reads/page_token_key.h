// PageTokenKey: the secret ListDomains page tokens are authenticated with
// (HMAC-SHA256, OpenSSL's libcrypto).
//
// The server makes one at start-up from random bytes and never writes it
// anywhere, so a token is only accepted by the process that issued it (and
// so for the one libvirt URI that process serves): a token that was forged
// or altered, or that comes from before a restart, is refused and the
// client starts the listing over. server.cc makes the key and hands it down
// by constructor to whoever encodes or decodes tokens.
//
// Immutable after construction; thread-safe.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace virtgate {

class PageTokenKey {
 public:
  static constexpr size_t kKeyBytes = 32;
  static constexpr size_t kMacBytes = 32;  // SHA-256

  // kKeyBytes from OpenSSL's CSPRNG; an error only if it has none.
  static absl::StatusOr<PageTokenKey> Random();

  // A given key (tests and fuzzers, which need one that is fixed).
  explicit PageTokenKey(std::string secret) : secret_(std::move(secret)) {}

  // HMAC-SHA256 of `data`: kMacBytes bytes.
  std::string Sign(absl::string_view data) const;
  // Whether `mac` is Sign(data), compared in constant time.
  bool Verify(absl::string_view data, absl::string_view mac) const;

 private:
  std::string secret_;
};

}  // namespace virtgate
