// The project's one logger: a thin layer over spdlog. Messages are a short sentence followed by
// key=value fields, e.g. TM_LOG_INFO("handshake complete peer={} endpoint={}", peer, ep).
// Never log secrets; print keys through ShortKey() (lib/crypto/keys.h).
#pragma once

#include <string_view>

#include "spdlog/spdlog.h"

namespace tunnelmesh {

// Sets up the process-wide logger writing to stderr. `level` is one of trace, debug, info, warn,
// error; anything else returns false and leaves the level at info.
bool InitLogging(std::string_view level);

}  // namespace tunnelmesh

#define TM_LOG_TRACE(...) SPDLOG_TRACE(__VA_ARGS__)
#define TM_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define TM_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define TM_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define TM_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
