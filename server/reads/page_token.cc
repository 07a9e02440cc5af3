#include "server/reads/page_token.h"

#include <algorithm>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace virtgate {
namespace {

// 4: an HMAC with the process's key replaced the checksum.
constexpr char kVersion = 4;
constexpr size_t kMaxField = 4096;

// FNV-1a, 64 bit: stable across builds and platforms, unlike std::hash.
uint64_t Fnv1a(absl::string_view data, uint64_t hash = 0xcbf29ce484222325ULL) {
  for (unsigned char c : data) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

bool GetU64(absl::string_view* in, uint64_t* v) {
  if (in->size() < 8) return false;
  *v = 0;
  for (int i = 0; i < 8; ++i) *v |= static_cast<uint64_t>(static_cast<unsigned char>((*in)[i])) << (8 * i);
  in->remove_prefix(8);
  return true;
}

void PutString(std::string* out, absl::string_view s) {
  const uint32_t n = static_cast<uint32_t>(s.size());
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out->append(s.data(), s.size());
}

bool GetString(absl::string_view* in, std::string* s) {
  if (in->size() < 4) return false;
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i) n |= static_cast<uint32_t>(static_cast<unsigned char>((*in)[i])) << (8 * i);
  in->remove_prefix(4);
  if (n > kMaxField || in->size() < n) return false;
  s->assign(in->data(), n);
  in->remove_prefix(n);
  return true;
}

// What the MAC covers besides the token: a key used elsewhere one day must
// not make its MACs valid tokens.
constexpr absl::string_view kContext = "virtgate.v1.ListDomains page token/";

absl::Status Invalid(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid page_token (", why, "); pass next_page_token from the previous response "
      "unchanged, or an empty token to start over"));
}

std::string Signed(absl::string_view body) { return absl::StrCat(kContext, body); }

}  // namespace

std::string EncodePageToken(const PageCursor& cursor, const PageTokenKey& key) {
  std::string raw;
  raw.push_back(kVersion);
  PutU64(&raw, cursor.filter_fingerprint);
  PutU64(&raw, static_cast<uint64_t>(cursor.listing_started_unix_nanos));
  PutU64(&raw, cursor.snapshot);
  PutString(&raw, cursor.last_name);
  PutString(&raw, cursor.last_uuid);
  raw.append(key.Sign(Signed(raw)));
  return absl::WebSafeBase64Escape(raw);
}

absl::StatusOr<PageCursor> DecodePageToken(absl::string_view token, const PageTokenKey& key) {
  constexpr size_t kMac = PageTokenKey::kMacBytes;
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw)) return Invalid("not base64url");
  if (raw.size() < 1 + 8 + 8 + 8 + 4 + 4 + kMac) return Invalid("too short");
  if (raw[0] != kVersion) return Invalid("unknown version");
  absl::string_view body(raw.data(), raw.size() - kMac);
  absl::string_view mac(raw.data() + raw.size() - kMac, kMac);
  if (!key.Verify(Signed(body), mac)) {
    return absl::InvalidArgumentError(
        "invalid page_token: not issued by this server process (altered, or issued before "
        "the server restarted); start the listing over with an empty page_token");
  }
  absl::string_view in = body.substr(1);
  PageCursor cursor;
  uint64_t started = 0;
  if (!GetU64(&in, &cursor.filter_fingerprint) || !GetU64(&in, &started) ||
      !GetU64(&in, &cursor.snapshot) ||
      !GetString(&in, &cursor.last_name) ||
      !GetString(&in, &cursor.last_uuid) || !in.empty()) {
    return Invalid("malformed");
  }
  cursor.listing_started_unix_nanos = static_cast<int64_t>(started);
  return cursor;
}

uint64_t FilterFingerprint(const v1::ListDomainsRequest& request) {
  auto tri = [](bool has, bool value) { return has ? (value ? "1" : "0") : "-"; };
  std::vector<int> states(request.states().begin(), request.states().end());
  std::sort(states.begin(), states.end());
  states.erase(std::unique(states.begin(), states.end()), states.end());
  std::string canon = absl::StrCat("a", tri(request.has_active(), request.active()), "p",
                                   tri(request.has_persistent(), request.persistent()), "s",
                                   tri(request.has_autostart(), request.autostart()), "st");
  for (int s : states) absl::StrAppend(&canon, ",", s);
  return Fnv1a(canon);
}

}  // namespace virtgate
