// The format of the project's log lines (lib/base/log.h), chosen with --log-format. Two formats on
// stderr: text, "2026-01-02T03:04:05.678 I message key=value" (the default), and json, one object
// a line: {"time": RFC 3339 UTC with milliseconds, "level": "info", "msg": the whole message, then
// each key=value field of the message as "key": "value"} (a field named like one of the first
// three, or repeated, stays only in msg). Both carry the same text, so the rule that no secret is
// logged holds for both.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tunnelmesh {

// Switches the process-wide logger to `format`: "text" or "json"; anything else returns false and
// keeps the format. Call after InitLogging.
bool SetLogFormat(std::string_view format);

// One log line in the json format (without the newline), for the formatter and tests.
// `unix_millis`: the time of the message; `level`: spdlog's name ("warning" becomes "warn").
std::string JsonLogLine(int64_t unix_millis, std::string_view level, std::string_view message);

}  // namespace tunnelmesh
