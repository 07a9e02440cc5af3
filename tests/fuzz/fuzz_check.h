// What the fuzz targets share: how an invariant fails, and what a status
// message that may reach a client must look like.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "server/reads/page_token_key.h"

namespace virtgate {
namespace fuzz {

// Aborts when `holds` is false: libFuzzer reports a deadly signal and keeps
// the input as a crash artifact, which fails the fuzz test.
inline void Require(bool holds, const char* invariant) {
  if (holds) return;
  std::fprintf(stderr, "fuzz invariant broken: %s\n", invariant);
  std::abort();
}

// No raw control character (what BoundMessage escapes, quote.h).
inline bool HasNoControlCharacters(absl::string_view text) {
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return false;
  }
  return true;
}

// The page-token key the fuzzers and fuzz_seeds sign with: fixed, so the
// committed seed tokens stay valid (a server makes a random one).
inline const PageTokenKey& FuzzTokenKey() {
  static const PageTokenKey* const key = new PageTokenKey(std::string(PageTokenKey::kKeyBytes, 'k'));
  return *key;
}

}  // namespace fuzz
}  // namespace virtgate
