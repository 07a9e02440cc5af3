// Writes the fuzz seeds that only the code can make: real page tokens
// (EncodePageToken) and requests in the binary wire format, some carrying a
// token issued for their filters. The text-format seeds beside them are
// written by hand.
//
//   fuzz_seeds DIR    (DIR: tests/fuzz/corpus; files are overwritten)
#include <cstdio>
#include <fstream>
#include <string>

#include <google/protobuf/text_format.h>

#include "absl/time/time.h"
#include "server/reads/domain_query.h"
#include "server/reads/page_token.h"
#include "tests/fuzz/fuzz_check.h"
#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {
namespace {

bool Write(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  out.close();
  if (!out) std::fprintf(stderr, "fuzz_seeds: cannot write %s\n", path.c_str());
  return static_cast<bool>(out);
}

// The token a first page of `request` ends with, after `last`.
std::string TokenAfter(const v1::ListDomainsRequest& request, const v1::Domain& last) {
  absl::StatusOr<ListQuery> query =
      ParseListRequest(request, PageLimits{}, fuzz::FuzzTokenKey(),
                       absl::FromUnixSeconds(1767225600));
  return query.ok() ? NextPageToken(*query, last, /*snapshot=*/7, fuzz::FuzzTokenKey()) : "";
}

int Main(const std::string& dir) {
  const std::string tokens = dir + "/page_token/";
  const std::string requests = dir + "/request/";
  bool ok = true;

  v1::Domain web;
  web.set_name("web-01");
  web.set_uuid("6695eb01-f6a4-8304-79aa-97f2502e193f");
  v1::Domain odd;
  odd.set_name("name with \"quotes\", spaces and \xc3\xa9");
  odd.set_uuid("00000000-0000-0000-0000-000000000001");

  v1::ListDomainsRequest all;
  v1::ListDomainsRequest running;
  running.set_page_size(2);
  running.set_active(true);
  running.add_states(v1::DOMAIN_STATE_RUNNING);
  running.add_states(v1::DOMAIN_STATE_PAUSED);
  running.set_consistency(v1::READ_CONSISTENCY_CACHED);

  ok &= Write(tokens + "all-after-web-01", TokenAfter(all, web));
  ok &= Write(tokens + "running-after-web-01", TokenAfter(running, web));
  ok &= Write(tokens + "all-after-odd-name", TokenAfter(all, odd));
  ok &= Write(tokens + "no-snapshot",
              EncodePageToken({"db", "6695eb01-f6a4-8304-79aa-97f2502e193f", 1, 0, 0}, fuzz::FuzzTokenKey()));

  // A token near kMaxPageTokenBytes, and bytes that page_token_fuzzer
  // reads as a cursor with a name of kMaxNameBytes.
  ok &= Write(tokens + "long-name", EncodePageToken({std::string(2900, 'n'), web.uuid(), 1, 2, 3}, fuzz::FuzzTokenKey()));
  ok &= Write(tokens + "long-cursor-bytes", std::string(64 + kMaxNameBytes + 24, 'a'));

  v1::ListDomainsRequest page2 = running;
  page2.set_page_token(TokenAfter(running, web));
  ok &= Write(requests + "list-first.bin", running.SerializeAsString());
  ok &= Write(requests + "list-page-2.bin", page2.SerializeAsString());
  v1::ListDomainsRequest other_filters = page2;  // the token is for `running`
  other_filters.clear_active();
  ok &= Write(requests + "list-token-for-other-filters.bin", other_filters.SerializeAsString());
  std::string text;
  google::protobuf::TextFormat::PrintToString(page2, &text);
  ok &= Write(requests + "list-page-2.txt", text);

  v1::GetDomainRequest by_name;
  by_name.set_name("web-01");
  by_name.set_consistency(v1::READ_CONSISTENCY_CACHED);
  v1::GetDomainRequest by_uuid;
  by_uuid.set_uuid("6695EB01F6A4830479AA97F2502E193F");
  ok &= Write(requests + "get-by-name.bin", by_name.SerializeAsString());
  ok &= Write(requests + "get-by-uuid.bin", by_uuid.SerializeAsString());

  v1::WatchLifecycleRequest watch;
  watch.add_domain_names("web-01");
  watch.add_domain_uuids("6695eb01-f6a4-8304-79aa-97f2502e193f");
  watch.add_event_types(v1::LIFECYCLE_EVENT_TYPE_STARTED);
  watch.add_event_types(v1::LIFECYCLE_EVENT_TYPE_STOPPED);
  watch.set_send_initial_state(true);
  watch.set_coalesce_ms(250);
  v1::WatchLifecycleRequest resume;
  resume.set_resume_after_sequence(42);
  resume.set_resume_epoch("3f1c0a9e5b7d4c21");
  ok &= Write(requests + "watch-initial.bin", watch.SerializeAsString());
  ok &= Write(requests + "watch-resume.bin", resume.SerializeAsString());

  // At and just past each limit, so that mutations start where the checks
  // change their answer (libFuzzer seldom grows an input this far itself).
  v1::GetDomainRequest longest;
  longest.set_name(std::string(kMaxNameBytes - 2, 'n') + "\x01\x7f");
  v1::GetDomainRequest too_long;
  too_long.set_name(std::string(kMaxNameBytes + 1, 'n'));
  ok &= Write(requests + "get-name-at-limit.bin", longest.SerializeAsString());
  ok &= Write(requests + "get-name-past-limit.bin", too_long.SerializeAsString());
  v1::ListDomainsRequest big_token;
  big_token.set_page_token(std::string(kMaxPageTokenBytes + 1, 'A'));
  ok &= Write(requests + "list-token-past-limit.bin", big_token.SerializeAsString());
  v1::WatchLifecycleRequest many;
  for (size_t i = 0; i <= kMaxFilterEntries; ++i) many.add_domain_names(std::to_string(i));
  ok &= Write(requests + "watch-names-past-limit.bin", many.SerializeAsString());
  v1::WatchLifecycleRequest long_epoch = resume;
  long_epoch.set_resume_epoch(std::string(kMaxEpochBytes + 1, 'e'));
  long_epoch.set_coalesce_ms(kMaxCoalesceMs + 1);
  ok &= Write(requests + "watch-epoch-past-limit.bin", long_epoch.SerializeAsString());
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace virtgate

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds DIR (e.g. tests/fuzz/corpus)\n");
    return 2;
  }
  return virtgate::Main(argv[1]);
}
