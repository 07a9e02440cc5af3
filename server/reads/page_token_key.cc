#include "server/reads/page_token_key.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace virtgate {

absl::StatusOr<PageTokenKey> PageTokenKey::Random() {
  std::string secret(kKeyBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(secret.data()), kKeyBytes) != 1) {
    return absl::InternalError(absl::StrCat("no random bytes for the page token key (OpenSSL ",
                                            ERR_get_error(), ")"));
  }
  return PageTokenKey(std::move(secret));
}

std::string PageTokenKey::Sign(absl::string_view data) const {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  // HMAC() only fails on an allocation failure; an empty MAC then matches
  // nothing, so every token is refused rather than any accepted.
  if (HMAC(EVP_sha256(), secret_.data(), static_cast<int>(secret_.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac,
           &length) == nullptr) {
    return std::string();
  }
  return std::string(reinterpret_cast<const char*>(mac), length);
}

bool PageTokenKey::Verify(absl::string_view data, absl::string_view mac) const {
  const std::string expected = Sign(data);
  return expected.size() == kMacBytes && mac.size() == kMacBytes &&
         CRYPTO_memcmp(expected.data(), mac.data(), kMacBytes) == 0;
}

}  // namespace virtgate
