// Minimal leveled logging to stderr (abseil 20220623 has no absl/log).
// Thread-safe; each call writes one whole line.
#pragma once

#include "absl/strings/string_view.h"

#include "absl/strings/str_cat.h"

namespace virtgate {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Lines below this level are dropped. Default kInfo.
void SetMinLogLevel(LogLevel level);
bool ParseLogLevel(absl::string_view text, LogLevel* level);

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
