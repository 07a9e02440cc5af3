// Real libvirt errors from the in-process test driver, mapped to gRPC codes.
#include "server/libvirt/errors.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "gtest/gtest.h"
#include "server/libvirt/event_loop.h"
#include "server/libvirt/handles.h"
#include "tests/support/test_domains.h"

namespace virtgate {
namespace {

class LibvirtErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(EnsureLibvirtEventLoop().ok());
    rw_.reset(virConnectOpen("test:///default"));
    ASSERT_NE(rw_, nullptr);
  }
  ConnectHandle rw_;  // keeps test:///default's state alive
};

TEST_F(LibvirtErrorsTest, MissingDomainIsNotFound) {
  ASSERT_EQ(virDomainLookupByName(rw_.get(), "no-such-domain"), nullptr);
  absl::Status s = LastLibvirtError("lookup");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("lookup: "), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("libvirt error 42"), absl::string_view::npos) << s;
}

TEST_F(LibvirtErrorsTest, InvalidOperationIsFailedPrecondition) {
  DomainHandle dom(virDomainDefineXML(rw_.get(), testing::TestDomainXml("errs-off").c_str()));
  ASSERT_NE(dom, nullptr);
  virVcpuInfo info[4];
  // Live vCPU info needs a running domain: "domain is not running".
  ASSERT_LT(virDomainGetVcpus(dom.get(), info, 4, nullptr, 0), 0);
  absl::Status s = LastLibvirtError("vcpus");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  virDomainUndefine(dom.get());
}

TEST_F(LibvirtErrorsTest, WriteOnReadOnlyConnectionIsPermissionDenied) {
  ConnectHandle ro(virConnectOpenReadOnly("test:///default"));
  ASSERT_NE(ro, nullptr);
  ASSERT_EQ(virDomainDefineXML(ro.get(), testing::TestDomainXml("errs-ro").c_str()), nullptr);
  EXPECT_EQ(LastLibvirtError("define").code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(LibvirtErrorsTest, BadXmlIsInvalidArgument) {
  ASSERT_EQ(virDomainDefineXML(rw_.get(), "<domain"), nullptr);
  EXPECT_EQ(LastLibvirtError("define").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LibvirtErrorsTest, UnreachableDaemonIsUnavailable) {
  ASSERT_EQ(virConnectOpen("test+unix:///default?socket=/nonexistent/virtgate-sock"), nullptr);
  absl::Status s = LastLibvirtError("test+unix:///default");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

TEST_F(LibvirtErrorsTest, NoRecordedErrorIsInternalAndSaysSo) {
  virResetLastError();
  absl::Status s = LastLibvirtError("ctx");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("without an error"), absl::string_view::npos);
}

TEST(LibvirtErrorMappingTest, CodesMapAsDocumented) {
  EXPECT_EQ(MapLibvirtErrorCode(VIR_ERR_NO_DOMAIN, VIR_FROM_QEMU), absl::StatusCode::kNotFound);
  EXPECT_EQ(MapLibvirtErrorCode(VIR_ERR_INVALID_ARG, VIR_FROM_QEMU),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MapLibvirtErrorCode(VIR_ERR_OPERATION_INVALID, VIR_FROM_QEMU),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(MapLibvirtErrorCode(VIR_ERR_ACCESS_DENIED, VIR_FROM_ACCESS),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(MapLibvirtErrorCode(VIR_ERR_AUTH_FAILED, VIR_FROM_AUTH),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(MapLibvirtErrorCode(VIR_ERR_SYSTEM_ERROR, VIR_FROM_RPC),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(MapLibvirtErrorCode(VIR_ERR_SYSTEM_ERROR, VIR_FROM_QEMU),
            absl::StatusCode::kInternal);
  EXPECT_EQ(MapLibvirtErrorCode(VIR_ERR_NO_SUPPORT, VIR_FROM_TEST),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(MapLibvirtErrorCode(VIR_ERR_OPERATION_TIMEOUT, VIR_FROM_QEMU),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace virtgate
