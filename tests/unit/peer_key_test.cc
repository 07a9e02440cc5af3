#include "server/rpc/peer_key.h"

#include "gtest/gtest.h"

namespace virtgate {
namespace {

TEST(PeerKeyTest, AnAddressWithoutItsPort) {
  EXPECT_EQ(PeerKey("ipv4:10.0.0.7:51234"), "ipv4:10.0.0.7");
  EXPECT_EQ(PeerKey("ipv4:10.0.0.7:1"), PeerKey("ipv4:10.0.0.7:2"));
  EXPECT_NE(PeerKey("ipv4:10.0.0.7:1"), PeerKey("ipv4:10.0.0.8:1"));
  EXPECT_EQ(PeerKey("ipv6:[::1]:5"), "ipv6:[::1]");
  EXPECT_EQ(PeerKey("ipv6:%5B::1%5D:56258"), "ipv6:[::1]");  // gRPC 1.51's form
  EXPECT_EQ(PeerKey("ipv6:%5BFE80::1%5D:1"), "ipv6:[fe80::1]");
}

TEST(PeerKeyTest, AnIpv4MappedAddressIsTheIpv4One) {
  EXPECT_EQ(PeerKey("ipv6:%5B::ffff:10.0.0.7%5D:5"), "ipv4:10.0.0.7");
  EXPECT_EQ(PeerKey("ipv6:[::FFFF:10.0.0.7]:5"), "ipv4:10.0.0.7");
}

TEST(PeerKeyTest, EveryUnixClientIsOnePeer) {
  EXPECT_EQ(PeerKey("unix:"), "unix");
  EXPECT_EQ(PeerKey("unix:/run/virtgate/virtgate.sock"), "unix");
  EXPECT_EQ(PeerKey("vsock:3:5"), "vsock");
  EXPECT_EQ(PeerKey(""), "");
}

}  // namespace
}  // namespace virtgate
