#include "server/libvirt/connection_pool.h"

#include <atomic>
#include <thread>
#include <optional>
#include <vector>

#include <libvirt/virterror.h>

#include "gtest/gtest.h"
#include "tests/support/libvirtd_fixture.h"

namespace virtgate {
namespace {

ConnectionPool::Options TestOptions(int size, int cap) {
  ConnectionPool::Options o;
  o.uri = "test:///default";
  o.size = size;
  o.max_calls_per_connection = cap;
  return o;
}

TEST(ConnectionPoolTest, OpensEveryConnectionReadOnly) {
  auto pool = ConnectionPool::Create(TestOptions(3, 4));
  ASSERT_TRUE(pool.ok()) << pool.status();
  ConnectionPool::Snapshot snap = (*pool)->GetSnapshot();
  EXPECT_EQ(snap.connections_up, 3);
  EXPECT_EQ(snap.connections_total, 3);
  absl::StatusOr<ConnectionPool::Lease> lease = (*pool)->Acquire(absl::InfiniteFuture());
  ASSERT_TRUE(lease.ok());
  // Read-only: libvirt refuses writes on it.
  EXPECT_EQ(virDomainDefineXML(lease->get(), "<domain type='test'><name>x</name>"
                                             "<memory>1024</memory><os><type>hvm</type></os>"
                                             "</domain>"),
            nullptr);
  EXPECT_EQ(virGetLastErrorCode(), VIR_ERR_OPERATION_DENIED);
}

// A call left running after its caller's lease is released (a bulk-stats
// call on a frozen guest) keeps its connection to itself, whatever the cap:
// nobody else is handed it until the call's own hold is released.
TEST(ConnectionPoolTest, AHoldKeepsItsConnectionOutOfAdmission) {
  auto pool = ConnectionPool::Create(TestOptions(2, 2));
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::optional<ConnectionPool::Lease> hold;
  virConnectPtr held = nullptr;
  {
    absl::StatusOr<ConnectionPool::Lease> lease = (*pool)->Acquire(absl::InfiniteFuture());
    ASSERT_TRUE(lease.ok()) << lease.status();
    held = lease->get();
    hold = (*pool)->Hold(held);
    ASSERT_TRUE(hold.has_value());
    EXPECT_EQ(hold->get(), held);
  }
  EXPECT_EQ((*pool)->GetSnapshot().in_flight, 0) << "a hold is not a call admitted";
  // Both admissions of the other connection, and then none.
  std::vector<ConnectionPool::Lease> leases;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<ConnectionPool::Lease> l = (*pool)->Acquire(absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_NE(l->get(), held);
    leases.push_back(*std::move(l));
  }
  EXPECT_EQ((*pool)->Acquire(absl::Now() + absl::Milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  hold.reset();
  absl::StatusOr<ConnectionPool::Lease> freed = (*pool)->Acquire(absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(freed.ok()) << freed.status();
  EXPECT_EQ(freed->get(), held);
  // Not a connection of the pool: nothing to hold.
  virConnectPtr stranger = virConnectOpenReadOnly("test:///default");
  ASSERT_NE(stranger, nullptr);
  EXPECT_FALSE((*pool)->Hold(stranger).has_value());
  virConnectClose(stranger);
}

// With one connection, a hold would stop every call: there is none.
TEST(ConnectionPoolTest, ASingleConnectionIsNeverHeld) {
  auto pool = ConnectionPool::Create(TestOptions(1, 1));
  ASSERT_TRUE(pool.ok()) << pool.status();
  absl::StatusOr<ConnectionPool::Lease> lease = (*pool)->Acquire(absl::InfiniteFuture());
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_FALSE((*pool)->Hold(lease->get()).has_value());
}

TEST(ConnectionPoolTest, AdmitsAtMostTheCapPerConnection) {
  auto pool = ConnectionPool::Create(TestOptions(2, 2));
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::vector<ConnectionPool::Lease> leases;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<ConnectionPool::Lease> l = (*pool)->Acquire(absl::InfiniteFuture());
    ASSERT_TRUE(l.ok()) << l.status();
    leases.push_back(*std::move(l));
  }
  // Spread evenly: two per connection.
  EXPECT_EQ(leases[0].get() == leases[1].get() ? 1 : 0, 0);
  EXPECT_EQ((*pool)->GetSnapshot().in_flight, 4);
  const absl::Time before = absl::Now();
  absl::StatusOr<ConnectionPool::Lease> fifth =
      (*pool)->Acquire(absl::Now() + absl::Milliseconds(100));
  EXPECT_EQ(fifth.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - before, absl::Seconds(2));

  // A release lets a waiter in.
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    absl::StatusOr<ConnectionPool::Lease> l = (*pool)->Acquire(absl::Now() + absl::Seconds(30));
    got = l.ok();
  });
  leases.pop_back();
  waiter.join();
  EXPECT_TRUE(got);
}

TEST(ConnectionPoolTest, UnreachableLibvirtFailsFastNamingTheUri) {
  ConnectionPool::Options o = TestOptions(2, 4);
  o.uri = "test+unix:///default?socket=/nonexistent/virtgate/libvirt-sock";
  auto pool = ConnectionPool::Create(o);
  ASSERT_TRUE(pool.ok()) << pool.status();  // starting without libvirt is fine
  std::optional<bool> announced;
  (*pool)->SetAvailabilityListener([&](bool up) { announced = up; });
  ASSERT_TRUE(announced.has_value());
  EXPECT_FALSE(*announced);
  const absl::Time before = absl::Now();
  absl::StatusOr<ConnectionPool::Lease> lease = (*pool)->Acquire(absl::InfiniteFuture());
  EXPECT_LT(absl::Now() - before, absl::Milliseconds(500));
  ASSERT_EQ(lease.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(lease.status().message().find("hypervisor unavailable"), absl::string_view::npos);
  EXPECT_NE(lease.status().message().find(o.uri), absl::string_view::npos) << lease.status();
  EXPECT_FALSE((*pool)->GetSnapshot().up());
  (*pool)->SetAvailabilityListener(nullptr);
}

TEST(ConnectionPoolTest, RejectsBadOptions) {
  EXPECT_EQ(ConnectionPool::Create(TestOptions(0, 4)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ConnectionPool::Create(TestOptions(2, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ConnectionPoolTest, LeaseMayOutliveThePool) {
  std::optional<ConnectionPool::Lease> lease;
  {
    auto pool = ConnectionPool::Create(TestOptions(1, 4));
    ASSERT_TRUE(pool.ok());
    lease.emplace(*(*pool)->Acquire(absl::InfiniteFuture()));
  }
  // The connection is still usable through the lease's own reference.
  EXPECT_EQ(virConnectIsAlive(lease->get()), 1);
  lease.reset();
}

}  // namespace
}  // namespace virtgate
