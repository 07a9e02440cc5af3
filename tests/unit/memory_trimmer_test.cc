// MemoryTrimmer: memory malloc holds free after a burst goes back to the
// system.
#include "server/base/memory_trimmer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/wait_for.h"

namespace virtgate {
namespace {

// This process's resident set, in bytes (/proc/self/statm).
size_t Resident() {
  std::ifstream statm("/proc/self/statm");
  size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * 4096;
}

// 64 MiB in 64 KiB blocks (below malloc's mmap threshold), every other one
// freed: the heap cannot shrink from the top, so only a trim gives the
// freed half back.
std::vector<std::unique_ptr<char[]>> Fragment() {
  constexpr size_t kBlock = 64 * 1024;
  std::vector<std::unique_ptr<char[]>> kept;
  std::vector<std::unique_ptr<char[]>> blocks;
  for (int i = 0; i < 1024; ++i) {
    blocks.emplace_back(new char[kBlock]);
    std::fill_n(blocks.back().get(), kBlock, 'x');  // resident
  }
  for (size_t i = 0; i < blocks.size(); i += 2) kept.push_back(std::move(blocks[i]));
  return kept;  // the odd blocks are freed here
}

#if defined(__SANITIZE_ADDRESS__)
// ASan's allocator is not glibc's: nothing is seen free, nothing trimmed.
TEST(MemoryTrimmerTest, UnderTheSanitizersAllocatorTrimsNothing) {
  auto kept = Fragment();
  EXPECT_FALSE(MemoryTrimmer::TrimIfWorthIt(size_t{8} << 20));
}
#else
TEST(MemoryTrimmerTest, GivesFreedMemoryBackOnlyPastTheThreshold) {
  auto kept = Fragment();
  ASSERT_GE(MemoryTrimmer::FreeHeld(), size_t{16} << 20);
  EXPECT_FALSE(MemoryTrimmer::TrimIfWorthIt(size_t{1} << 40));  // under the threshold
  const size_t before = Resident();
  EXPECT_TRUE(MemoryTrimmer::TrimIfWorthIt(size_t{8} << 20));
  EXPECT_LE(Resident() + (size_t{16} << 20), before);  // most of the freed 32 MiB
}

TEST(MemoryTrimmerTest, ItsThreadTrimsWithinAnInterval) {
  auto kept = Fragment();
  MemoryTrimmer trimmer({absl::Milliseconds(20), size_t{8} << 20});
  EXPECT_TRUE(testing::WaitFor([&] { return trimmer.trims() > 0; }, absl::Seconds(30)));
}
#endif

}  // namespace
}  // namespace virtgate
