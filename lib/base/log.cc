#include "lib/base/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <set>

#include "lib/base/log_format.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_color_sinks.h"

namespace tunnelmesh {
namespace {

void AppendJsonString(std::string_view text, std::string* out) {
  out->push_back('"');
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '"') {
      *out += "\\\"";
    } else if (c == '\\') {
      *out += "\\\\";
    } else if (c == '\n') {
      *out += "\\n";
    } else if (c == '\r') {
      *out += "\\r";
    } else if (c == '\t') {
      *out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", u);
      *out += buf;
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

bool IsFieldKey(std::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return !(key[0] >= '0' && key[0] <= '9');
}

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const int64_t millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count();
    const auto level = spdlog::level::to_string_view(msg.level);
    std::string line = JsonLogLine(millis, std::string_view(level.data(), level.size()),
                                   std::string_view(msg.payload.data(), msg.payload.size()));
    line.push_back('\n');
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

}  // namespace

bool InitLogging(std::string_view level) {
  auto logger = spdlog::stderr_color_mt("tunnelmesh");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ %v");
  spdlog::set_default_logger(logger);
  // spdlog spells the warning level "warning"; accept the short form the help text uses.
  const std::string name = level == "warn" ? "warning" : std::string(level);
  spdlog::level::level_enum parsed = spdlog::level::from_str(name);
  bool known = spdlog::level::to_string_view(parsed) == name && name != "off";
  spdlog::set_level(known ? parsed : spdlog::level::info);
  return known;
}

bool SetLogFormat(std::string_view format) {
  if (format == "text") return true;
  if (format != "json") return false;
  spdlog::default_logger()->set_formatter(std::make_unique<JsonFormatter>());
  return true;
}

std::string JsonLogLine(int64_t unix_millis, std::string_view level, std::string_view message) {
  const std::time_t seconds = static_cast<std::time_t>(unix_millis / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char time[96];
  std::snprintf(time, sizeof(time), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(unix_millis % 1000));
  // spdlog calls the warning level "warning"; the flags and the text format say "warn".
  if (level == "warning") level = "warn";
  std::string out = "{\"time\":\"";
  out += time;
  out += "\",\"level\":";
  AppendJsonString(level, &out);
  out += ",\"msg\":";
  AppendJsonString(message, &out);
  // key=value fields: space-separated words whose key is lower_snake_case. A quoted value
  // (name="a b") runs to its closing quote.
  std::set<std::string_view> seen{"time", "level", "msg"};
  size_t i = 0;
  while (i < message.size()) {
    while (i < message.size() && message[i] == ' ') ++i;
    const size_t start = i;
    while (i < message.size() && message[i] != ' ' && message[i] != '=') ++i;
    if (i >= message.size() || message[i] != '=') {
      while (i < message.size() && message[i] != ' ') ++i;
      continue;
    }
    const std::string_view key = message.substr(start, i - start);
    ++i;  // '='
    std::string_view value;
    if (i < message.size() && message[i] == '"') {
      const size_t close = message.find('"', i + 1);
      const size_t end = close == std::string_view::npos ? message.size() : close;
      value = message.substr(i + 1, end - i - 1);
      i = end == message.size() ? end : end + 1;
    } else {
      const size_t begin = i;
      while (i < message.size() && message[i] != ' ') ++i;
      value = message.substr(begin, i - begin);
    }
    // Trailing punctuation of a sentence ("port=7700;") is not part of the value.
    while (!value.empty() && (value.back() == ';' || value.back() == ',')) value.remove_suffix(1);
    if (!IsFieldKey(key) || !seen.insert(key).second) continue;
    out += ",";
    AppendJsonString(key, &out);
    out += ":";
    AppendJsonString(value, &out);
  }
  out += "}";
  return out;
}

}  // namespace tunnelmesh
