#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace tunnelmesh {

// Decimal digits only: no sign, no spaces, no hex, at most 10 digits. Empty when not a number or
// above `max`. The numbers of config files and of the UAPI protocol are read with it.
inline std::optional<uint32_t> ParseDecimal(std::string_view text, uint32_t max) {
  if (text.empty() || text.size() > 10) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > max) return std::nullopt;
  return static_cast<uint32_t>(value);
}

}  // namespace tunnelmesh
