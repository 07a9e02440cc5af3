// Minimal leveled logging to stderr (abseil 20220623 has no absl/log).
// Thread-safe; each call writes one whole line: text by default,
//   2026-12-02T10:00:00.123Z INFO virtgated: serving ...
// or one JSON object (--log_format=json), for log collectors:
//   {"time":"2026-12-02T10:00:00.123Z","level":"INFO","logger":"virtgated","message":"serving ..."}
#pragma once

#include "absl/strings/string_view.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace virtgate {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Lines below this level are dropped. Default kInfo.
void SetMinLogLevel(LogLevel level);
bool ParseLogLevel(absl::string_view text, LogLevel* level);

enum class LogFormat { kText, kJson };
void SetLogFormat(LogFormat format);
bool ParseLogFormat(absl::string_view text, LogFormat* format);

// The line LogLine writes for `message` at `time` (with its newline).
std::string FormatLogLine(LogFormat format, LogLevel level, absl::Time time,
                          absl::string_view message);

void LogLine(LogLevel level, absl::string_view message);

template <typename... Args>
void LogDebug(const Args&... args) { LogLine(LogLevel::kDebug, absl::StrCat(args...)); }
template <typename... Args>
void LogInfo(const Args&... args) { LogLine(LogLevel::kInfo, absl::StrCat(args...)); }
template <typename... Args>
void LogWarning(const Args&... args) { LogLine(LogLevel::kWarning, absl::StrCat(args...)); }
template <typename... Args>
void LogError(const Args&... args) { LogLine(LogLevel::kError, absl::StrCat(args...)); }

}  // namespace virtgate
