// virtgated's command line as a user meets it, on the real binary: --help
// (exit 0, flags by topic, no path of the build machine), an unknown flag,
// and a value refused at start (exit 2, saying why). Nothing here starts a
// server that keeps running.
#include <fstream>
#include <iterator>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/command.h"
#include "tests/support/server_process.h"

namespace virtgate {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::CommandResult;
using testing::RunCommand;
using testing::VirtgatedPath;

constexpr const char* kTopics[] = {
    "\nlibvirt:\n",           "\ncalls into libvirt:\n", "\nlistening, TLS and authorization:\n",
    "\nlimits on clients:\n", "\nevents and watches:\n", "\nshutdown:\n",
    "\nlogging:\n",
};

TEST(VirtgatedHelpTest, HelpExitsZeroWithTheFlagsByTopic) {
  for (const char* help : {"--help", "-h", "--helpfull"}) {
    SCOPED_TRACE(help);
    const CommandResult r = RunCommand({VirtgatedPath(), help});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    EXPECT_EQ(r.err, "");
    for (const char* topic : kTopics) EXPECT_THAT(r.out, HasSubstr(topic));
    EXPECT_THAT(r.out, HasSubstr("  --libvirt_uri (default: qemu:///system)\n"));
    EXPECT_THAT(r.out, HasSubstr("  --health_listen (default: none)\n"));
    EXPECT_THAT(r.out, HasSubstr("  --shutdown_grace (default: 10s)\n"));
    EXPECT_THAT(r.out, HasSubstr("VIRTGATE_<FLAG IN UPPER\nCASE>"));
    // Every flag is filed under a topic (see server_flags_test).
    EXPECT_THAT(r.out, Not(HasSubstr("not filed under a topic")));
    // No path of the machine it was built on ("Flags from /.../main.cc").
    EXPECT_THAT(r.out, Not(HasSubstr(VIRTGATE_SOURCE_DIR)));
    EXPECT_THAT(r.out, Not(HasSubstr("Flags from")));
  }
  // Help wins over the environment, and shows the defaults.
  const CommandResult r =
      RunCommand({VirtgatedPath(), "--help"}, {"VIRTGATE_LIBVIRT_URI=test:///default"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.out, HasSubstr("  --libvirt_uri (default: qemu:///system)\n"));
}

// The binary names its flags' files relative to the source tree (absl keeps
// each flag's __FILE__): no source path of the build machine in it.
// Only in the plain build, the one shipped: AddressSanitizer's metadata for
// globals names each source file as the compiler was given it, which gcc 12
// does not remap with -ffile-prefix-map.
#if !defined(__SANITIZE_ADDRESS__)
TEST(VirtgatedHelpTest, BinaryHoldsNoSourcePath) {
  std::ifstream file(VirtgatedPath(), std::ios::binary);
  ASSERT_TRUE(file.good());
  const std::string binary((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  EXPECT_FALSE(absl::StrContains(binary, absl::StrCat(VIRTGATE_SOURCE_DIR, "/server/")))
      << "virtgated contains " << VIRTGATE_SOURCE_DIR << "/server/...";
}
#endif

TEST(VirtgatedFlagsTest, UnknownFlagFailsNamingIt) {
  const CommandResult r = RunCommand({VirtgatedPath(), "--no_such_flag=1"});
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_THAT(r.err, HasSubstr("Unknown command line flag 'no_such_flag'"));
}

// libvirtd serves at most max_client_requests (5) calls per connection: more
// is refused at start, saying why, before anything is opened.
TEST(VirtgatedFlagsTest, MoreThanFiveCallsPerConnectionIsRefused) {
  CommandResult r = RunCommand(
      {VirtgatedPath(), "--libvirt_uri=test:///default", "--max_calls_per_connection=6"});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_THAT(r.err, HasSubstr("--max_calls_per_connection must be between 1 and 5, got 6"));
  EXPECT_THAT(r.err, HasSubstr("max_client_requests"));
  r = RunCommand({VirtgatedPath(), "--libvirt_uri=test:///default"},
                 {"VIRTGATE_MAX_CALLS_PER_CONNECTION=0"});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_THAT(r.err, HasSubstr("--max_calls_per_connection must be between 1 and 5, got 0"));
}

}  // namespace
}  // namespace virtgate
