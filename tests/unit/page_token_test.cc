#include "server/reads/page_token.h"

#include "gtest/gtest.h"

namespace virtgate {
namespace {

TEST(PageTokenTest, RoundTrips) {
  PageCursor in{"web-01", "6695eb01-f6a4-8304-79aa-97f2502e193f", 0x1234};
  absl::StatusOr<PageCursor> out = DecodePageToken(EncodePageToken(in));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->last_name, in.last_name);
  EXPECT_EQ(out->last_uuid, in.last_uuid);
  EXPECT_EQ(out->filter_fingerprint, in.filter_fingerprint);
}

TEST(PageTokenTest, EveryFlippedCharacterIsRejected) {
  const std::string token = EncodePageToken({"db", "6695eb01-f6a4-8304-79aa-97f2502e193f", 7});
  for (size_t i = 0; i < token.size(); ++i) {
    std::string forged = token;
    forged[i] = forged[i] == 'A' ? 'B' : 'A';
    absl::StatusOr<PageCursor> out = DecodePageToken(forged);
    if (out.ok()) {
      // Base64 padding bits may not change the bytes; then it decodes equal.
      EXPECT_EQ(out->last_name, "db") << "position " << i;
      continue;
    }
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << "position " << i;
  }
}

TEST(PageTokenTest, MalformedTokensAreInvalidArgument) {
  const std::string token = EncodePageToken({"db", "x", 7});
  for (const std::string& bad :
       {std::string("not base64!"), std::string("AAAA"), token.substr(0, token.size() / 2),
        token + "AAAA", std::string(1000, 'A')}) {
    absl::StatusOr<PageCursor> out = DecodePageToken(bad);
    ASSERT_FALSE(out.ok()) << bad;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(out.status().message().find("page_token"), absl::string_view::npos);
  }
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
