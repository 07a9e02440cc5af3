#include "server/libvirt/connection_pool.h"

#include <atomic>
#include <thread>
#include <optional>
#include <vector>

#include <libvirt/virterror.h>

#include "gtest/gtest.h"
#include "tests/support/wait_for.h"

namespace virtgate {
namespace {

ConnectionPool::Options TestOptions(int size, int cap) {
  ConnectionPool::Options o;
  o.connect.uri = "test:///default";
  o.size = size;
  o.max_calls_per_connection = cap;
  return o;
}

// A pool with what it reports to.
struct Rig {
  explicit Rig(ConnectionPool::Options options)
      : pool(ConnectionPool::Create(std::move(options), availability,
                                    std::make_shared<ReconnectSignal>())) {
    if (pool.ok()) (*pool)->WaitForFirstAttempt(absl::Now() + absl::Seconds(10));
  }
  std::shared_ptr<Availability> availability = std::make_shared<Availability>();
  absl::StatusOr<std::unique_ptr<ConnectionPool>> pool;
};

TEST(ConnectionPoolTest, OpensEveryConnectionReadOnly) {
  Rig rig(TestOptions(3, 4));
  auto& pool = rig.pool;
  ASSERT_TRUE(pool.ok()) << pool.status();
  ConnectionPool::Snapshot snap = (*pool)->GetSnapshot();
  EXPECT_EQ(snap.connections_up, 3);
  EXPECT_EQ(snap.connections_total, 3);
  EXPECT_EQ(snap.last_error, "");
  EXPECT_TRUE(rig.availability->Get().calls_up);
  absl::StatusOr<ConnectionPool::Lease> lease = (*pool)->Acquire(absl::InfiniteFuture());
  ASSERT_TRUE(lease.ok());
  // Read-only: libvirt refuses writes on it.
  EXPECT_EQ(virDomainDefineXML(lease->get(), "<domain type='test'><name>x</name>"
                                             "<memory>1024</memory><os><type>hvm</type></os>"
                                             "</domain>"),
            nullptr);
  EXPECT_EQ(virGetLastErrorCode(), VIR_ERR_OPERATION_DENIED);
}

// A connection carrying a call stuck on a frozen guest is retired: no new
// leases, and a replacement opens, so the pool is back to full strength.
TEST(ConnectionPoolTest, ARetiredConnectionIsReplaced) {
  Rig rig(TestOptions(2, 1));
  ASSERT_TRUE(rig.pool.ok()) << rig.pool.status();
  ConnectionPool& pool = **rig.pool;
  ASSERT_TRUE(testing::WaitFor([&] { return pool.GetSnapshot().connections_up == 2; },
                               absl::Seconds(10)));
  virConnectPtr retired = nullptr;
  {
    absl::StatusOr<ConnectionPool::Lease> lease = pool.Acquire(absl::InfiniteFuture());
    ASSERT_TRUE(lease.ok()) << lease.status();
    retired = lease->get();
    virConnectRef(retired);  // keep the pointer valid for comparison
    EXPECT_TRUE(pool.Retire(retired));
    EXPECT_FALSE(pool.Retire(retired)) << "already retired";
    // The stuck call still holds it: it stays alive, outside the pool.
    EXPECT_EQ(virConnectIsAlive(lease->get()), 1);
  }
  ASSERT_TRUE(testing::WaitFor([&] { return pool.GetSnapshot().connections_up == 2; },
                               absl::Seconds(10)))
      << "a replacement opens";
  std::vector<ConnectionPool::Lease> leases;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<ConnectionPool::Lease> l = pool.Acquire(absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_NE(l->get(), retired);
    leases.push_back(*std::move(l));
  }
  virConnectClose(retired);
  // Not a connection of the pool: nothing to retire.
  virConnectPtr stranger = virConnectOpenReadOnly("test:///default");
  ASSERT_NE(stranger, nullptr);
  EXPECT_FALSE(pool.Retire(stranger));
  virConnectClose(stranger);
}

TEST(ConnectionPoolTest, AdmitsAtMostTheCapPerConnection) {
  Rig rig(TestOptions(2, 2));
  auto& pool = rig.pool;
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
  o.connect.uri = "test+unix:///default?socket=/nonexistent/virtgate/libvirt-sock";
  Rig rig(o);
  auto& pool = rig.pool;
  ASSERT_TRUE(pool.ok()) << pool.status();  // starting without libvirt is fine
  EXPECT_FALSE(rig.availability->Get().calls_up);
  const absl::Time before = absl::Now();
  absl::StatusOr<ConnectionPool::Lease> lease = (*pool)->Acquire(absl::InfiniteFuture());
  EXPECT_LT(absl::Now() - before, absl::Milliseconds(500));
  ASSERT_EQ(lease.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(lease.status().message().find("hypervisor unavailable"), absl::string_view::npos);
  EXPECT_NE(lease.status().message().find(o.connect.uri), absl::string_view::npos)
      << lease.status();
  EXPECT_FALSE((*pool)->GetSnapshot().up());
  EXPECT_NE((*pool)->GetSnapshot().last_error, "");
}

TEST(ConnectionPoolTest, RejectsBadOptions) {
  EXPECT_EQ(Rig(TestOptions(0, 4)).pool.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Rig(TestOptions(2, 0)).pool.status().code(), absl::StatusCode::kInvalidArgument);
  // Above libvirtd's max_client_requests (5), saying why.
  EXPECT_TRUE(Rig(TestOptions(2, 5)).pool.ok());
  const absl::Status six = Rig(TestOptions(2, 6)).pool.status();
  EXPECT_EQ(six.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(six.message().find("max_client_requests"), absl::string_view::npos) << six;
}

TEST(ConnectionPoolTest, LeaseMayOutliveThePool) {
  std::optional<ConnectionPool::Lease> lease;
  {
    Rig rig(TestOptions(1, 4));
    ASSERT_TRUE(rig.pool.ok());
    lease.emplace(*(*rig.pool)->Acquire(absl::InfiniteFuture()));
  }
  // The connection is still usable through the lease's own reference.
  EXPECT_EQ(virConnectIsAlive(lease->get()), 1);
  lease.reset();
}

}  // namespace
}  // namespace virtgate
