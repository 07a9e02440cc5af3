#include "server/metrics/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace virtgate {
namespace {

// /proc/self/stat's fields after the command name (which may hold spaces
// and parentheses: it ends at the last ')'); fields[0] is field 3, state.
std::vector<std::string> StatFields() {
  std::ifstream in("/proc/self/stat");
  std::stringstream text;
  text << in.rdbuf();
  const std::string line = text.str();
  const size_t end = line.rfind(')');
  if (end == std::string::npos || end + 2 > line.size()) return {};
  return absl::StrSplit(line.substr(end + 2), ' ', absl::SkipEmpty());
}

double Field(const std::vector<std::string>& fields, int number) {
  // proc(5) numbers fields from 1; fields[0] is field 3.
  const size_t index = static_cast<size_t>(number - 3);
  double value = 0;
  if (index < fields.size() && absl::SimpleAtod(fields[index], &value)) return value;
  return 0;
}

double BootTime() {
  std::ifstream in("/proc/stat");
  std::string key;
  while (in >> key) {
    if (key == "btime") {
      double value = 0;
      in >> value;
      return value;
    }
    std::string rest;
    std::getline(in, rest);
  }
  return 0;
}

int OpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  int n = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n - 1;  // not the one reading the directory
}

}  // namespace

ProcessMetrics::ProcessMetrics()
    : ticks_per_second_(sysconf(_SC_CLK_TCK)), boot_time_seconds_(BootTime()) {}

void ProcessMetrics::Write(Exposition* out) const {
  const std::vector<std::string> stat = StatFields();
  const double ticks = ticks_per_second_ > 0 ? static_cast<double>(ticks_per_second_) : 100.0;
  using T = Exposition::Type;
  out->Single("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
              T::kCounter, (Field(stat, 14) + Field(stat, 15)) / ticks);
  out->Single("process_resident_memory_bytes", "Resident memory size in bytes.", T::kGauge,
              Field(stat, 24) * static_cast<double>(sysconf(_SC_PAGESIZE)));
  out->Single("process_virtual_memory_bytes", "Virtual memory size in bytes.", T::kGauge,
              Field(stat, 23));
  out->Single("process_start_time_seconds",
              "Start time of the process since unix epoch in seconds.", T::kGauge,
              boot_time_seconds_ + Field(stat, 22) / ticks);
  out->Single("process_open_fds", "Number of open file descriptors.", T::kGauge, OpenFds());
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    out->Single("process_max_fds", "Maximum number of open file descriptors.", T::kGauge,
                limit.rlim_cur == RLIM_INFINITY ? -1.0 : static_cast<double>(limit.rlim_cur));
  }
  out->Single("virtgate_process_threads", "Threads of the virtgated process.", T::kGauge,
              Field(stat, 20));
}

}  // namespace virtgate
