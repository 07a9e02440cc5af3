// main() for every test binary: gtest's own, plus skips that cannot pass
// for a pass.
//
// gtest exits 0 when a test skips, and ctest would count the binary as
// passed. Here a run whose tests all passed or skipped, with at least one
// skip, exits kSkipExitCode, which CMake declares as every test's
// SKIP_RETURN_CODE, so ctest reports it as "Skipped". With VIRTGATE_NO_SKIPS=1
// (set by CI, which installs everything a test needs) a skip is a failure:
// there, a test that finds something missing has found a broken machine or a
// broken test, not a machine that lacks a package.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tests/support/skips.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int status = RUN_ALL_TESTS();
  const ::testing::UnitTest& run = *::testing::UnitTest::GetInstance();
  if (status != 0 || run.skipped_test_count() == 0) return status;
  const bool fail = virtgate::testing::SkipsAreFailures();
  std::fprintf(stderr, "%d test(s) skipped%s:\n", run.skipped_test_count(),
               fail ? ", and VIRTGATE_NO_SKIPS=1 makes a skip a failure" : "");
  for (int i = 0; i < run.total_test_suite_count(); ++i) {
    const ::testing::TestSuite& suite = *run.GetTestSuite(i);
    for (int j = 0; j < suite.total_test_count(); ++j) {
      const ::testing::TestInfo& test = *suite.GetTestInfo(j);
      if (test.result()->Skipped()) {
        std::fprintf(stderr, "  %s.%s\n", suite.name(), test.name());
      }
    }
  }
  return fail ? 1 : virtgate::testing::kSkipExitCode;
}
