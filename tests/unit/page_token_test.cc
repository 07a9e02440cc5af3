#include "server/reads/page_token.h"

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/reads/page_token_key.h"

namespace virtgate {
namespace {

using ::testing::HasSubstr;

const PageTokenKey& Key() {
  static const PageTokenKey* key = new PageTokenKey(std::string(32, 'k'));
  return *key;
}

TEST(PageTokenTest, RoundTrips) {
  PageCursor in{"web-01", "6695eb01-f6a4-8304-79aa-97f2502e193f", 0x1234, 99, 7};
  absl::StatusOr<PageCursor> out = DecodePageToken(EncodePageToken(in, Key()), Key());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->last_name, in.last_name);
  EXPECT_EQ(out->last_uuid, in.last_uuid);
  EXPECT_EQ(out->filter_fingerprint, in.filter_fingerprint);
  EXPECT_EQ(out->listing_started_unix_nanos, in.listing_started_unix_nanos);
  EXPECT_EQ(out->snapshot, in.snapshot);
}

TEST(PageTokenTest, EveryFlippedCharacterIsRejected) {
  const std::string token =
      EncodePageToken({"db", "6695eb01-f6a4-8304-79aa-97f2502e193f", 7}, Key());
  for (size_t i = 0; i < token.size(); ++i) {
    std::string forged = token;
    forged[i] = forged[i] == 'A' ? 'B' : 'A';
    absl::StatusOr<PageCursor> out = DecodePageToken(forged, Key());
    if (out.ok()) {
      // Base64 padding bits may not change the bytes; then it decodes equal.
      EXPECT_EQ(out->last_name, "db") << "position " << i;
      continue;
    }
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << "position " << i;
  }
}

// The cursor is readable (base64 of plain fields): whoever rewrites it, and
// keeps the format, must still be refused.
TEST(PageTokenTest, AWellFormedTokenNotSignedWithTheKeyIsRejected) {
  const std::string token = EncodePageToken({"db", "x", 7, 1, 2}, Key());
  std::string raw;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(token, &raw));
  const size_t at = raw.find("db");
  ASSERT_NE(at, std::string::npos);
  raw[at] = 'z';  // another position in the listing, same length
  absl::StatusOr<PageCursor> out = DecodePageToken(absl::WebSafeBase64Escape(raw), Key());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("not issued by this server process"));
  EXPECT_THAT(out.status().message(), HasSubstr("start the listing over"));
}

TEST(PageTokenTest, ATokenFromAnotherKeyIsRejected) {
  absl::StatusOr<PageTokenKey> mine = PageTokenKey::Random();
  absl::StatusOr<PageTokenKey> restarted = PageTokenKey::Random();
  ASSERT_TRUE(mine.ok() && restarted.ok());
  const std::string token = EncodePageToken({"db", "x", 7}, *mine);
  EXPECT_TRUE(DecodePageToken(token, *mine).ok());
  absl::StatusOr<PageCursor> out = DecodePageToken(token, *restarted);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("issued before the server restarted"));
}

TEST(PageTokenTest, MalformedTokensAreInvalidArgument) {
  const std::string token = EncodePageToken({"db", "x", 7}, Key());
  for (const std::string& bad :
       {std::string("not base64!"), std::string("AAAA"), token.substr(0, token.size() / 2),
        token + "AAAA", std::string(1000, 'A')}) {
    absl::StatusOr<PageCursor> out = DecodePageToken(bad, Key());
    ASSERT_FALSE(out.ok()) << bad;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(out.status().message().find("page_token"), absl::string_view::npos);
  }
}

// RFC 4231, test case 2: the MAC is HMAC-SHA256 itself.
TEST(PageTokenKeyTest, SignsWithHmacSha256) {
  const PageTokenKey key("Jefe");
  const std::string mac = key.Sign("what do ya want for nothing?");
  EXPECT_EQ(absl::BytesToHexString(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_TRUE(key.Verify("what do ya want for nothing?", mac));
  EXPECT_FALSE(key.Verify("what do ya want for nothing!", mac));
  EXPECT_FALSE(key.Verify("what do ya want for nothing?", mac.substr(0, 16)));
}

TEST(PageTokenKeyTest, RandomKeysDiffer) {
  absl::StatusOr<PageTokenKey> a = PageTokenKey::Random();
  absl::StatusOr<PageTokenKey> b = PageTokenKey::Random();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->Sign("x"), b->Sign("x"));
}

TEST(PageTokenTest, FingerprintIdentifiesFiltersNotPaging) {
  v1::ListDomainsRequest a;
  a.set_active(true);
  a.add_states(v1::DOMAIN_STATE_RUNNING);
  a.add_states(v1::DOMAIN_STATE_PAUSED);
  v1::ListDomainsRequest b = a;
  b.clear_states();
  b.add_states(v1::DOMAIN_STATE_PAUSED);
  b.add_states(v1::DOMAIN_STATE_RUNNING);
  b.set_page_size(10);
  b.set_page_token("whatever");
  EXPECT_EQ(FilterFingerprint(a), FilterFingerprint(b));
  v1::ListDomainsRequest c = a;
  c.set_active(false);
  EXPECT_NE(FilterFingerprint(a), FilterFingerprint(c));
  v1::ListDomainsRequest d = a;
  d.clear_active();
  EXPECT_NE(FilterFingerprint(a), FilterFingerprint(d));
}

}  // namespace
}  // namespace virtgate
