// What the fuzz targets share: how an invariant fails, and what a status
// message that may reach a client must look like.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "absl/strings/string_view.h"

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

}  // namespace fuzz
}  // namespace virtgate
