// virtgated's flags (server/server_flags.cc): --help files every flag under
// a topic, so a new flag cannot go missing from it; which arguments ask for
// help.
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server_flags.h"

namespace virtgate {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(ServerFlagsTest, HelpFilesEveryFlagUnderATopic) {
  const std::string help = FlagsHelp();
  int flags = 0;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!absl::StrContains(flag->Filename(), "server/server_flags.cc")) continue;
    ++flags;
    EXPECT_THAT(help, HasSubstr(absl::StrCat("\n  --", name, " (default: ")))
        << "--" << name << " is not in virtgated --help";
  }
  EXPECT_GT(flags, 30);
  EXPECT_THAT(help, Not(HasSubstr("not filed under a topic")))
      << "file each new flag under a topic in Topics(), server/server_flags.cc";
}

TEST(ServerFlagsTest, WhichArgumentsAskForHelp) {
  auto wants = [](std::vector<std::string> args) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    return WantsHelp(static_cast<int>(argv.size()), argv.data());
  };
  EXPECT_TRUE(wants({"virtgated", "--help"}));
  EXPECT_TRUE(wants({"virtgated", "-h"}));
  EXPECT_TRUE(wants({"virtgated", "--listen=127.0.0.1:0", "--helpfull"}));
  EXPECT_TRUE(wants({"virtgated", "-help"}));
  EXPECT_FALSE(wants({"virtgated"}));
  EXPECT_FALSE(wants({"virtgated", "--listen=127.0.0.1:0"}));
  EXPECT_FALSE(wants({"virtgated", "--", "--help"}));
}

}  // namespace
}  // namespace virtgate
