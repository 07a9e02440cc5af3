// Fuzzes virtgatectl's command line (client/args.h): the input split on NUL
// bytes is argv after the program name. Invariants, besides no crash, leak
// or UB: a refusal is INVALID_ARGUMENT with a message; an accepted line
// carries only options that apply to its command, and values within what
// --help documents (page size >= 0, a positive finite timeout, known states
// and event types each once, no empty --server or --domain).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/args.h"
#include "tests/fuzz/fuzz_check.h"

namespace virtgate {
namespace {

using fuzz::Require;

template <typename T>
bool EachOnce(const std::vector<T>& values) {
  for (size_t i = 0; i < values.size(); ++i) {
    for (size_t j = i + 1; j < values.size(); ++j) {
      if (values[i] == values[j]) return false;
    }
  }
  return true;
}

void Check(const std::vector<std::string>& args) {
  std::vector<const char*> argv = {"virtgatectl"};
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  const int argc = static_cast<int>(argv.size());
  argv.push_back(nullptr);  // As main's argv ends.
  absl::StatusOr<Invocation> inv = ParseArgs(argc, argv.data());
  if (!inv.ok()) {
    Require(inv.status().code() == absl::StatusCode::kInvalidArgument,
            "a bad command line is INVALID_ARGUMENT");
    Require(!inv.status().message().empty(), "a bad command line is told why");
    return;
  }
  Require(inv->page_size >= 0, "no negative page size");
  Require(inv->client.timeout > absl::ZeroDuration() &&
              inv->client.timeout != absl::InfiniteDuration(),
          "the timeout is positive and finite");
  for (v1::DomainState s : inv->states) {
    Require(s != v1::DOMAIN_STATE_UNSPECIFIED && v1::DomainState_IsValid(s), "a known state");
  }
  Require(EachOnce(inv->states), "each state once");
  for (v1::LifecycleEventType t : inv->types) {
    Require(t != v1::LIFECYCLE_EVENT_TYPE_UNSPECIFIED && v1::LifecycleEventType_IsValid(t),
            "a known event type");
  }
  Require(EachOnce(inv->types), "each event type once");
  for (const std::string& d : inv->domains) Require(!d.empty(), "no empty --domain");
  const Command c = inv->command;
  if (c == Command::kNone || c == Command::kHelp) return;  // Nothing runs.
  const bool list_options = inv->active || inv->persistent || inv->autostart ||
                            !inv->states.empty() || inv->page_size != 0;
  Require(c == Command::kList || !list_options, "list's options only with list");
  Require(c == Command::kList || c == Command::kGet || !inv->cached,
          "--cached only with list and get");
  Require(c == Command::kWatch || (inv->domains.empty() && inv->types.empty() && !inv->initial),
          "watch's options only with watch");
  Require(c == Command::kGet || c == Command::kHealth || inv->argument.empty(),
          "only get and health take an argument");
}

}  // namespace
}  // namespace virtgate

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args;
  if (size > 0) {
    args = absl::StrSplit(absl::string_view(reinterpret_cast<const char*>(data), size), '\0');
  }
  virtgate::Check(args);
  return 0;
}
