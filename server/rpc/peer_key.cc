#include "server/rpc/peer_key.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace virtgate {

std::string PeerKey(absl::string_view grpc_peer) {
  absl::string_view rest = grpc_peer;
  if (absl::ConsumePrefix(&rest, "ipv4:")) {
    return absl::StrCat("ipv4:", rest.substr(0, rest.rfind(':')));
  }
  if (absl::ConsumePrefix(&rest, "ipv6:")) {
    // gRPC 1.51 percent-encodes the brackets.
    std::string host = absl::AsciiStrToLower(absl::StrReplaceAll(
        rest.substr(0, rest.rfind(':')), {{"%5B", "["}, {"%5b", "["}, {"%5D", "]"}, {"%5d", "]"}}));
    absl::string_view address = host;
    if (absl::ConsumePrefix(&address, "[::ffff:") && absl::ConsumeSuffix(&address, "]") &&
        absl::StrContains(address, '.')) {
      return absl::StrCat("ipv4:", address);
    }
    return absl::StrCat("ipv6:", host);
  }
  if (absl::StartsWith(grpc_peer, "unix:")) return "unix";
  return std::string(grpc_peer.substr(0, grpc_peer.find(':')));
}

}  // namespace virtgate
