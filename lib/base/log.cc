#include "lib/base/log.h"

#include "spdlog/sinks/stdout_color_sinks.h"

namespace tunnelmesh {

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

}  // namespace tunnelmesh
