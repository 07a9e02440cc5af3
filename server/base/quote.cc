#include "server/base/quote.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace virtgate {

std::string Quote(absl::string_view input, size_t max_bytes) {
  const bool cut = input.size() > max_bytes;
  std::string out =
      absl::StrCat("\"", absl::CHexEscape(input.substr(0, max_bytes)), cut ? "...\"" : "\"");
  if (cut) absl::StrAppend(&out, " (", input.size(), " bytes)");
  return out;
}

std::string BoundMessage(absl::string_view message, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(message.size(), max_bytes) + 16);
  for (char c : message) {
    if (out.size() >= max_bytes) {
      absl::StrAppend(&out, "... (", message.size(), " bytes)");
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(u, absl::kZeroPad2));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace virtgate
