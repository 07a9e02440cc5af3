#include "client/args.h"

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/output.h"

namespace virtgate {
namespace {

enum class OptionId {
  kServer,
  kTimeout,
  kOutput,
  kTlsCa,
  kTlsCert,
  kTlsKey,
  kTlsServerName,
  kHelp,
  kActive,
  kInactive,
  kPersistent,
  kTransient,
  kAutostart,
  kNoAutostart,
  kState,
  kPageSize,
  kCached,
  kDomain,
  kType,
  kInitial,
};

// Which command an option belongs to (kRead: list and get).
enum class Scope { kAll, kList, kRead, kWatch };

struct OptionSpec {
  OptionId id;
  absl::string_view name;  // Long name, with '-' as separator.
  char short_name;         // 0: none.
  bool takes_value;
  Scope scope;
};

constexpr OptionSpec kOptions[] = {
    {OptionId::kServer, "server", 0, true, Scope::kAll},
    {OptionId::kTimeout, "timeout", 0, true, Scope::kAll},
    {OptionId::kOutput, "output", 'o', true, Scope::kAll},
    {OptionId::kTlsCa, "tls-ca", 0, true, Scope::kAll},
    {OptionId::kTlsCert, "tls-cert", 0, true, Scope::kAll},
    {OptionId::kTlsKey, "tls-key", 0, true, Scope::kAll},
    {OptionId::kTlsServerName, "tls-server-name", 0, true, Scope::kAll},
    {OptionId::kHelp, "help", 'h', false, Scope::kAll},
    {OptionId::kActive, "active", 0, false, Scope::kList},
    {OptionId::kInactive, "inactive", 0, false, Scope::kList},
    {OptionId::kPersistent, "persistent", 0, false, Scope::kList},
    {OptionId::kTransient, "transient", 0, false, Scope::kList},
    {OptionId::kAutostart, "autostart", 0, false, Scope::kList},
    {OptionId::kNoAutostart, "no-autostart", 0, false, Scope::kList},
    {OptionId::kState, "state", 0, true, Scope::kList},
    {OptionId::kPageSize, "page-size", 0, true, Scope::kList},
    {OptionId::kCached, "cached", 0, false, Scope::kRead},
    {OptionId::kDomain, "domain", 0, true, Scope::kWatch},
    {OptionId::kType, "type", 0, true, Scope::kWatch},
    {OptionId::kInitial, "initial", 0, false, Scope::kWatch},
};

struct CommandSpec {
  absl::string_view name;
  Command command;
  size_t min_args;
  size_t max_args;
  absl::string_view args_usage;
};

constexpr CommandSpec kCommands[] = {
    {"list", Command::kList, 0, 0, ""},
    {"get", Command::kGet, 1, 1, " NAME|UUID"},
    {"host", Command::kHost, 0, 0, ""},
    {"health", Command::kHealth, 0, 1, " [SERVICE]"},
    {"watch", Command::kWatch, 0, 0, ""},
};

// What the options say while the line is read, before the command is known.
struct Parsing {
  Invocation inv;
  bool help = false;
  std::vector<std::string> positional;  // The command, then its arguments.
  // The first list-only, read-only and watch-only options given, to reject
  // them for other commands.
  std::string first_list_option;
  std::string first_read_option;
  std::string first_watch_option;
};

const OptionSpec* FindLong(absl::string_view name) {
  const std::string normalized = absl::StrReplaceAll(name, {{"_", "-"}});
  for (const OptionSpec& spec : kOptions) {
    if (spec.name == normalized) return &spec;
  }
  return nullptr;
}

const OptionSpec* FindShort(char name) {
  for (const OptionSpec& spec : kOptions) {
    if (spec.short_name != 0 && spec.short_name == name) return &spec;
  }
  return nullptr;
}

// Sets a tri-state filter; giving both of a pair (--active --inactive) is a
// contradiction the user should hear about rather than "last one wins".
absl::Status SetFilter(std::optional<bool>* filter, bool value, absl::string_view yes,
                       absl::string_view no) {
  if (filter->has_value() && **filter != value) {
    return absl::InvalidArgumentError(absl::StrCat("--", yes, " and --", no, " exclude each other"));
  }
  *filter = value;
  return absl::OkStatus();
}

absl::StatusOr<absl::Duration> ParseTimeout(absl::string_view text) {
  absl::Duration timeout;
  int64_t seconds = 0;
  // A bare number is seconds, the unit people mean when they leave it out.
  if (absl::SimpleAtoi(text, &seconds)) {
    timeout = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &timeout)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad --timeout \"", text, "\": want a duration like 500ms, 3s or 1m"));
  }
  if (timeout <= absl::ZeroDuration() || timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad --timeout \"", text, "\": must be positive and finite"));
  }
  return timeout;
}

absl::Status ApplyOption(const OptionSpec& spec, absl::string_view value, Parsing* p) {
  if (spec.scope == Scope::kList && p->first_list_option.empty()) {
    p->first_list_option = absl::StrCat("--", spec.name);
  }
  if (spec.scope == Scope::kRead && p->first_read_option.empty()) {
    p->first_read_option = absl::StrCat("--", spec.name);
  }
  if (spec.scope == Scope::kWatch && p->first_watch_option.empty()) {
    p->first_watch_option = absl::StrCat("--", spec.name);
  }
  Invocation* inv = &p->inv;
  switch (spec.id) {
    case OptionId::kServer:
      if (value.empty()) return absl::InvalidArgumentError("--server needs an address");
      inv->server = std::string(value);
      return absl::OkStatus();
    case OptionId::kTimeout: {
      absl::StatusOr<absl::Duration> timeout = ParseTimeout(value);
      if (!timeout.ok()) return timeout.status();
      inv->client.timeout = *timeout;
      return absl::OkStatus();
    }
    case OptionId::kOutput:
      if (value == "table") {
        inv->output = Output::kTable;
      } else if (value == "json") {
        inv->output = Output::kJson;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("bad --output \"", value, "\": want table or json"));
      }
      return absl::OkStatus();
    case OptionId::kTlsCa:
      inv->client.tls_ca_file = std::string(value);
      return absl::OkStatus();
    case OptionId::kTlsCert:
      inv->client.tls_cert_file = std::string(value);
      return absl::OkStatus();
    case OptionId::kTlsKey:
      inv->client.tls_key_file = std::string(value);
      return absl::OkStatus();
    case OptionId::kTlsServerName:
      inv->client.tls_server_name = std::string(value);
      return absl::OkStatus();
    case OptionId::kHelp:
      p->help = true;
      return absl::OkStatus();
    case OptionId::kActive:
      return SetFilter(&inv->active, true, "active", "inactive");
    case OptionId::kInactive:
      return SetFilter(&inv->active, false, "active", "inactive");
    case OptionId::kPersistent:
      return SetFilter(&inv->persistent, true, "persistent", "transient");
    case OptionId::kTransient:
      return SetFilter(&inv->persistent, false, "persistent", "transient");
    case OptionId::kAutostart:
      return SetFilter(&inv->autostart, true, "autostart", "no-autostart");
    case OptionId::kNoAutostart:
      return SetFilter(&inv->autostart, false, "autostart", "no-autostart");
    case OptionId::kState:
      for (absl::string_view name : absl::StrSplit(value, ',')) {
        v1::DomainState state;
        if (!ParseDomainStateName(absl::StripAsciiWhitespace(name), &state)) {
          return absl::InvalidArgumentError(absl::StrCat("bad --state \"", name,
                                                         "\": want one of ", DomainStateNames()));
        }
        bool seen = false;
        for (v1::DomainState s : inv->states) seen = seen || s == state;
        if (!seen) inv->states.push_back(state);
      }
      return absl::OkStatus();
    case OptionId::kPageSize:
      if (!absl::SimpleAtoi(value, &inv->page_size) || inv->page_size < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad --page-size \"", value, "\": want a number >= 0"));
      }
      return absl::OkStatus();
    case OptionId::kCached:
      inv->cached = true;
      return absl::OkStatus();
    case OptionId::kDomain:
      if (value.empty()) return absl::InvalidArgumentError("--domain needs a name or UUID");
      inv->domains.emplace_back(value);
      return absl::OkStatus();
    case OptionId::kType:
      for (absl::string_view name : absl::StrSplit(value, ',')) {
        v1::LifecycleEventType type;
        if (!ParseLifecycleEventTypeName(absl::StripAsciiWhitespace(name), &type)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "bad --type \"", name, "\": want one of ", LifecycleEventTypeNames()));
        }
        bool seen = false;
        for (v1::LifecycleEventType t : inv->types) seen = seen || t == type;
        if (!seen) inv->types.push_back(type);
      }
      return absl::OkStatus();
    case OptionId::kInitial:
      inv->initial = true;
      return absl::OkStatus();
  }
  return absl::InternalError("unhandled option");
}

// Reads the options and collects the rest as positional arguments.
absl::Status ReadOptions(int argc, const char* const* argv, Parsing* p) {
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (options_done || arg == "-" || !absl::StartsWith(arg, "-")) {
      p->positional.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    const OptionSpec* spec = nullptr;
    std::optional<absl::string_view> value;
    std::string shown;  // The option as the user spelled it, for errors.
    if (absl::StartsWith(arg, "--")) {
      absl::string_view name = arg.substr(2);
      const size_t eq = name.find('=');
      if (eq != absl::string_view::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      shown = absl::StrCat("--", name);
      spec = FindLong(name);
    } else {
      shown = std::string(arg.substr(0, 2));
      spec = FindShort(arg[1]);
      // "-ojson" and "-o=json" as well as "-o json".
      if (arg.size() > 2) value = absl::StripPrefix(arg.substr(2), "=");
    }
    if (spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown option ", shown));
    if (!spec->takes_value && value.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("option ", shown, " takes no value"));
    }
    if (spec->takes_value && !value.has_value()) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("option ", shown, " needs a value"));
      }
      value = argv[++i];
    }
    absl::Status applied = ApplyOption(*spec, value.value_or(""), p);
    if (!applied.ok()) return applied;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Invocation> ParseArgs(int argc, const char* const* argv) {
  Parsing p;
  if (absl::Status read = ReadOptions(argc, argv, &p); !read.ok()) return read;
  Invocation& inv = p.inv;
  if (p.help || (!p.positional.empty() && p.positional[0] == "help")) {
    inv.command = Command::kHelp;
    return std::move(inv);
  }
  if (p.positional.empty()) {
    inv.command = Command::kNone;
    return std::move(inv);
  }

  const std::string& name = p.positional[0];
  const CommandSpec* command = nullptr;
  for (const CommandSpec& c : kCommands) {
    if (c.name == name) command = &c;
  }
  if (command == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown command \"", name, "\""));
  }
  const size_t args = p.positional.size() - 1;
  if (args < command->min_args || args > command->max_args) {
    return absl::InvalidArgumentError(
        absl::StrCat("usage: virtgatectl ", command->name, command->args_usage));
  }
  if (command->command != Command::kList && !p.first_list_option.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(p.first_list_option, " applies to list only"));
  }
  if (command->command != Command::kList && command->command != Command::kGet &&
      !p.first_read_option.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(p.first_read_option, " applies to list and get only"));
  }
  if (command->command != Command::kWatch && !p.first_watch_option.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(p.first_watch_option, " applies to watch only"));
  }
  inv.command = command->command;
  if (args > 0) inv.argument = p.positional[1];
  return std::move(inv);
}

}  // namespace virtgate
