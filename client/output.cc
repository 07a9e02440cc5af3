#include "client/output.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstddef>
#include <iterator>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"

namespace virtgate {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

constexpr absl::string_view kStatePrefix = "DOMAIN_STATE_";
constexpr absl::string_view kEventTypePrefix = "LIFECYCLE_EVENT_TYPE_";

using Rows = std::vector<std::vector<std::string>>;

// Pads every column but the last to its widest cell, two spaces apart, so
// lines carry no trailing blanks.
std::string RenderColumns(const Rows& rows) {
  std::vector<size_t> widths;
  for (const std::vector<std::string>& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const std::vector<std::string>& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      out += row[i];
      if (i + 1 < row.size()) out.append(widths[i] - row[i].size() + 2, ' ');
    }
    out += '\n';
  }
  return out;
}

std::string FieldValue(const Message& message, const FieldDescriptor& field) {
  const Reflection& reflection = *message.GetReflection();
  const absl::string_view name = field.name();
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_BOOL:
      return reflection.GetBool(message, &field) ? "yes" : "no";
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string value = reflection.GetString(message, &field);
      return value.empty() ? "-" : value;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const int number = reflection.GetEnumValue(message, &field);
      if (field.enum_type() == v1::DomainState_descriptor()) {
        return DomainStateName(static_cast<v1::DomainState>(number));
      }
      const google::protobuf::EnumValueDescriptor* value =
          field.enum_type()->FindValueByNumber(number);
      return value != nullptr ? value->name() : absl::StrCat(number);
    }
    case FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat(reflection.GetInt32(message, &field));
    case FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat(reflection.GetInt64(message, &field));
    case FieldDescriptor::CPPTYPE_UINT32: {
      const uint32_t value = reflection.GetUInt32(message, &field);
      // A domain's runtime id 0 means "not running", not a real id.
      if (message.GetDescriptor() == v1::Domain::descriptor() && name == "id" && value == 0) {
        return "-";
      }
      return absl::StrCat(value);
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      const uint64_t value = reflection.GetUInt64(message, &field);
      if (absl::EndsWith(name, "_kib")) return absl::StrCat(value, " (", HumanKib(value), ")");
      if (absl::EndsWith(name, "_ns") && value != 0) {
        return absl::StrCat(value, " (",
                            absl::FormatDuration(absl::Nanoseconds(static_cast<int64_t>(value))),
                            ")");
      }
      return absl::StrCat(value);
    }
    case FieldDescriptor::CPPTYPE_FLOAT:
      return absl::StrCat(reflection.GetFloat(message, &field));
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return absl::StrCat(reflection.GetDouble(message, &field));
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;  // Flattened by the caller.
  }
  return "?";
}

// Walks the fields by reflection, so a field added to the proto shows up
// without touching the CLI.
void AppendFields(const Message& message, const std::string& prefix, Rows* rows) {
  const Descriptor& descriptor = *message.GetDescriptor();
  const Reflection& reflection = *message.GetReflection();
  for (int i = 0; i < descriptor.field_count(); ++i) {
    const FieldDescriptor& field = *descriptor.field(i);
    const std::string key = absl::StrCat(prefix, field.name());
    if (field.is_repeated()) {
      // None of the rendered messages has one today; keep it visible anyway.
      rows->push_back({absl::StrCat(key, ":"),
                       absl::StrCat(reflection.FieldSize(message, &field), " item(s)")});
    } else if (field.cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      AppendFields(reflection.GetMessage(message, &field), absl::StrCat(key, "."), rows);
    } else {
      rows->push_back({absl::StrCat(key, ":"), FieldValue(message, field)});
    }
  }
}

std::string FormatFields(const Message& message) {
  Rows rows;
  AppendFields(message, "", &rows);
  return RenderColumns(rows);
}

}  // namespace

namespace {

// Both enums name their values TYPE_PREFIX_VALUE with *_UNSPECIFIED = 0;
// users see and type the lower-case VALUE part ("running", "started").
std::string ShortEnumName(const google::protobuf::EnumDescriptor* d, int value,
                          absl::string_view prefix) {
  const google::protobuf::EnumValueDescriptor* v = d->FindValueByNumber(value);
  if (v == nullptr) return absl::StrCat(value);
  absl::string_view name = v->name();
  if (absl::StartsWith(name, prefix)) name.remove_prefix(prefix.size());
  return absl::AsciiStrToLower(name);
}

bool ParseShortEnumName(const google::protobuf::EnumDescriptor* d, absl::string_view name,
                        absl::string_view prefix, int* value) {
  const google::protobuf::EnumValueDescriptor* v =
      d->FindValueByName(absl::StrCat(prefix, absl::AsciiStrToUpper(name)));
  if (v == nullptr || v->number() == 0) return false;  // *_UNSPECIFIED is not a choice
  *value = v->number();
  return true;
}

std::string ShortEnumNames(const google::protobuf::EnumDescriptor* d, absl::string_view prefix) {
  std::vector<std::string> names;
  for (int i = 0; i < d->value_count(); ++i) {
    if (d->value(i)->number() == 0) continue;
    names.push_back(ShortEnumName(d, d->value(i)->number(), prefix));
  }
  return absl::StrJoin(names, "|");
}

}  // namespace

std::string DomainStateName(v1::DomainState state) {
  return ShortEnumName(v1::DomainState_descriptor(), state, kStatePrefix);
}

bool ParseDomainStateName(absl::string_view name, v1::DomainState* state) {
  int value = 0;
  if (!ParseShortEnumName(v1::DomainState_descriptor(), name, kStatePrefix, &value)) return false;
  *state = static_cast<v1::DomainState>(value);
  return true;
}

std::string DomainStateNames() {
  return ShortEnumNames(v1::DomainState_descriptor(), kStatePrefix);
}

std::string LifecycleEventTypeName(v1::LifecycleEventType type) {
  return ShortEnumName(v1::LifecycleEventType_descriptor(), type, kEventTypePrefix);
}

bool ParseLifecycleEventTypeName(absl::string_view name, v1::LifecycleEventType* type) {
  int value = 0;
  if (!ParseShortEnumName(v1::LifecycleEventType_descriptor(), name, kEventTypePrefix, &value)) {
    return false;
  }
  *type = static_cast<v1::LifecycleEventType>(value);
  return true;
}

std::string LifecycleEventTypeNames() {
  return ShortEnumNames(v1::LifecycleEventType_descriptor(), kEventTypePrefix);
}

std::string FormatWatchLine(const v1::WatchLifecycleResponse& message) {
  std::string time = "-";
  if (message.has_time()) {
    const absl::Time t =
        absl::FromUnixSeconds(message.time().seconds()) + absl::Nanoseconds(message.time().nanos());
    time = absl::FormatTime("%Y-%m-%d%ET%H:%M:%E3SZ", t, absl::UTCTimeZone());
  }
  const auto domain = [](const std::string& name, const std::string& uuid) {
    if (!name.empty()) return name;
    return uuid.empty() ? std::string("-") : uuid;
  };
  switch (message.payload_case()) {
    case v1::WatchLifecycleResponse::kEvent: {
      const v1::LifecycleEvent& e = message.event();
      std::string what = absl::AsciiStrToUpper(LifecycleEventTypeName(e.type()));
      if (!e.detail().empty()) absl::StrAppend(&what, "/", e.detail());
      if (e.synthetic()) what += " (synthetic)";
      return absl::StrCat(time, "  ", domain(e.domain_name(), e.domain_uuid()), "  ", what,
                          "  seq=", message.sequence(), "\n");
    }
    case v1::WatchLifecycleResponse::kInitial: {
      const v1::Domain& d = message.initial().domain();
      std::string state = DomainStateName(d.state());
      if (d.stale()) state += " (stale)";
      return absl::StrCat(time, "  ", domain(d.name(), d.uuid()), "  INITIAL ", state,
                          "  seq=", message.sequence(), "\n");
    }
    case v1::WatchLifecycleResponse::kSynced:
      return absl::StrCat(time, "  -- synced (seq=", message.sequence(), ") --\n");
    case v1::WatchLifecycleResponse::kConnection: {
      const v1::ConnectionChange& c = message.connection();
      std::string state;
      switch (c.state()) {
        case v1::ConnectionChange::STATE_LOST:
          state = "LOST";
          break;
        case v1::ConnectionChange::STATE_RESTORED:
          state = "RESTORED";
          break;
        default:
          state = absl::StrCat("state ", static_cast<int>(c.state()));
          break;
      }
      std::string reason = absl::StrReplaceAll(c.reason(), {{"\n", " "}, {"\r", " "}});
      return absl::StrCat(time, "  -- libvirt connection ", state,
                          reason.empty() ? "" : absl::StrCat(": ", reason), " --\n");
    }
    case v1::WatchLifecycleResponse::PAYLOAD_NOT_SET:
      break;
  }
  return absl::StrCat(time, "  -- unknown message (seq=", message.sequence(), ") --\n");
}

std::string HumanKib(uint64_t kib) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (kib < 1024) return absl::StrCat(kib, " KiB");
  double value = static_cast<double>(kib);
  size_t unit = 0;
  // Round before comparing so 1048575 KiB reads "1.0 GiB", not "1024.0 MiB".
  while (unit + 1 < std::size(kUnits) && value >= 1024 * 0.99995) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string FormatDomainTable(const std::vector<v1::Domain>& domains) {
  Rows rows;
  rows.reserve(domains.size() + 1);
  rows.push_back({"NAME", "UUID", "ID", "STATE", "VCPUS", "MEMORY"});
  for (const v1::Domain& d : domains) {
    std::string state = DomainStateName(d.state());
    if (d.stale()) state += " (stale)";
    rows.push_back({d.name(), d.uuid(), d.id() == 0 ? "-" : absl::StrCat(d.id()),
                    std::move(state), absl::StrCat(d.vcpus()), HumanKib(d.memory_kib())});
  }
  return RenderColumns(rows);
}

std::string FormatDomain(const v1::Domain& domain) { return FormatFields(domain); }

std::string FormatHostInfo(const v1::HostInfo& info) { return FormatFields(info); }

absl::StatusOr<std::string> FormatJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot render ", message.GetTypeName(), " as JSON: ",
                     std::string(status.message().data(), status.message().size())));
  }
  while (!json.empty() && json.back() == '\n') json.pop_back();
  json += '\n';
  return json;
}

absl::StatusOr<std::string> FormatJsonLine(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = false;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot render ", message.GetTypeName(), " as JSON: ",
                     std::string(status.message().data(), status.message().size())));
  }
  json += '\n';
  return json;
}

absl::StatusOr<std::string> FormatDomainListJson(const std::vector<v1::Domain>& domains) {
  // Built around FormatJson's rendering of each domain, indented one level
  // deeper, to match protobuf's own layout (one space per level).
  std::string out = "{\n \"domains\": [";
  for (size_t i = 0; i < domains.size(); ++i) {
    absl::StatusOr<std::string> json = FormatJson(domains[i]);
    if (!json.ok()) return json.status();
    absl::string_view body = absl::StripSuffix(*json, "\n");
    out += i == 0 ? "\n" : ",\n";
    for (absl::string_view line : absl::StrSplit(body, '\n')) {
      absl::StrAppend(&out, "  ", line, "\n");
    }
    out.pop_back();
  }
  out += domains.empty() ? "]\n}\n" : "\n ]\n}\n";
  return out;
}

}  // namespace virtgate
