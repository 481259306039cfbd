#include "node-agent/uapi/uapi_protocol.h"

#include <errno.h>
#include <sodium.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "lib/base/decimal.h"

namespace tunnelmesh::uapi {
namespace {

// A value as it may be quoted in an error: printable, bounded (never a key: see KeyFromHex).
std::string Quoted(std::string_view text) {
  constexpr size_t kMaxQuoted = 64;
  const bool truncated = text.size() > kMaxQuoted;
  return absl::StrCat(
      "\"", absl::CHexEscape(absl::string_view(text.data(), truncated ? kMaxQuoted : text.size())),
      truncated ? "...\"" : "\"");
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// 64 hex digits -> 32 bytes. The value is never echoed: it may be a private or preshared key.
bool KeyFromHex(std::string_view hex, uint8_t out[kKeySize]) {
  if (hex.size() != 2 * kKeySize) return false;
  for (size_t i = 0; i < kKeySize; ++i) {
    const int high = HexDigit(hex[2 * i]);
    const int low = HexDigit(hex[2 * i + 1]);
    if (high < 0 || low < 0) return false;
    out[i] = static_cast<uint8_t>(high << 4 | low);
  }
  return true;
}

void AppendHex(const uint8_t* bytes, std::string* out) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (size_t i = 0; i < kKeySize; ++i) {
    out->push_back(kDigits[bytes[i] >> 4]);
    out->push_back(kDigits[bytes[i] & 0xf]);
  }
}

class SetParser {
 public:
  absl::Status Line(size_t number, std::string_view key, std::string_view value) {
    auto error = [&](std::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", number, ": ", std::string(key), ": ", std::string(what)));
    };
    auto flag = [&](bool* target) {
      if (value != "true") return error(absl::StrCat(Quoted(value), " is not \"true\""));
      *target = true;
      return absl::OkStatus();
    };
    if (key == "public_key") {
      PeerChange peer;
      if (!KeyFromHex(value, peer.public_key.bytes.data())) {
        return error("is not a key (expected 64 hex digits)");
      }
      set_.peers.push_back(std::move(peer));
      return absl::OkStatus();
    }
    if (set_.peers.empty()) {
      if (key == "private_key") {
        uint8_t bytes[kKeySize];
        if (!KeyFromHex(value, bytes)) return error("is not a key (expected 64 hex digits)");
        set_.private_key = SecretKey(bytes);
        sodium_memzero(bytes, sizeof(bytes));
        return absl::OkStatus();
      }
      if (key == "listen_port") {
        std::optional<uint32_t> port = ParseDecimal(value, 65535);
        if (!port) return error(absl::StrCat(Quoted(value), " is not a port (0-65535)"));
        set_.listen_port = static_cast<uint16_t>(*port);
        return absl::OkStatus();
      }
      if (key == "fwmark") {
        std::optional<uint32_t> mark = ParseDecimal(value, UINT32_MAX);
        if (!mark) return error(absl::StrCat(Quoted(value), " is not a 32-bit number"));
        set_.fwmark = static_cast<uint32_t>(*mark);
        return absl::OkStatus();
      }
      if (key == "replace_peers") return flag(&set_.replace_peers);
      return error("unknown interface key (or a peer key before public_key)");
    }
    PeerChange& peer = set_.peers.back();
    if (key == "remove") return flag(&peer.remove);
    if (key == "update_only") return flag(&peer.update_only);
    if (key == "replace_allowed_ips") return flag(&peer.replace_allowed_ips);
    if (key == "preshared_key") {
      uint8_t bytes[kKeySize];
      if (!KeyFromHex(value, bytes)) return error("is not a key (expected 64 hex digits)");
      peer.preshared_key = SecretKey(bytes);
      sodium_memzero(bytes, sizeof(bytes));
      return absl::OkStatus();
    }
    if (key == "endpoint") {
      absl::StatusOr<Endpoint> endpoint = Endpoint::Parse(value);
      if (!endpoint.ok() || !endpoint->valid()) {
        return error(absl::StrCat(Quoted(value), " is not IP:PORT or [IPv6]:PORT"));
      }
      peer.endpoint = *endpoint;
      return absl::OkStatus();
    }
    if (key == "persistent_keepalive_interval") {
      std::optional<uint32_t> seconds = ParseDecimal(value, 65535);
      if (!seconds) return error(absl::StrCat(Quoted(value), " is not seconds (0-65535)"));
      peer.persistent_keepalive = static_cast<uint16_t>(*seconds);
      return absl::OkStatus();
    }
    if (key == "allowed_ip") {
      if (value.find('/') == std::string_view::npos) {
        return error(absl::StrCat(Quoted(value), " is not an IP prefix (expected ADDRESS/LENGTH)"));
      }
      absl::StatusOr<Prefix> prefix = Prefix::Parse(value);
      if (!prefix.ok()) {
        return error(absl::StrCat(Quoted(value), " is not an IP prefix (expected ADDRESS/LENGTH)"));
      }
      peer.allowed_ips.push_back(Prefix(prefix->address(), prefix->length()));
      return absl::OkStatus();
    }
    if (key == "protocol_version") {
      if (value != "1") return error(absl::StrCat(Quoted(value), " is not 1 (the only version)"));
      return absl::OkStatus();
    }
    return error("unknown peer key");
  }

  SetRequest Take() { return std::move(set_); }

 private:
  SetRequest set_;
};

}  // namespace

void RequestFramer::Feed(std::string_view bytes) {
  if (failed_) return;
  while (!bytes.empty()) {
    const size_t newline = bytes.find('\n');
    const std::string_view part = bytes.substr(0, newline);
    if (pending_.size() + part.size() > kMaxLineLength) {
      failed_ = true;
      return;
    }
    pending_.append(part.data(), part.size());
    if (newline == std::string_view::npos) return;
    if (lines_.size() > kMaxLinesPerRequest) {
      failed_ = true;
      return;
    }
    lines_.push_back(std::move(pending_));
    pending_.clear();
    bytes.remove_prefix(newline + 1);
  }
}

absl::StatusOr<std::optional<std::vector<std::string>>> RequestFramer::Next() {
  if (failed_) {
    return absl::ResourceExhaustedError(absl::StrCat("request has a line longer than ",
                                                     kMaxLineLength, " bytes or more than ",
                                                     kMaxLinesPerRequest, " lines"));
  }
  for (size_t i = 0; i < lines_.size(); ++i) {
    if (!lines_[i].empty()) continue;
    std::vector<std::string> request(std::make_move_iterator(lines_.begin()),
                                     std::make_move_iterator(lines_.begin() + i));
    lines_.erase(lines_.begin(), lines_.begin() + i + 1);
    return std::optional<std::vector<std::string>>(std::move(request));
  }
  return std::optional<std::vector<std::string>>();
}

absl::StatusOr<Request> ParseRequest(const std::vector<std::string>& lines) {
  if (lines.empty() || (lines[0] != "get=1" && lines[0] != "set=1")) {
    return absl::InvalidArgumentError(absl::StrCat("the first line is ",
                                                   lines.empty() ? "\"\"" : Quoted(lines[0]),
                                                   ", not \"get=1\" or \"set=1\""));
  }
  Request request;
  if (lines[0] == "get=1") {
    if (lines.size() > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("line 2: a get request has no further lines, got ", Quoted(lines[1])));
    }
    return request;
  }
  request.kind = Request::Kind::kSet;
  SetParser parser;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    const size_t equals = line.find('=');
    if (equals == std::string_view::npos || equals == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", i + 1, ": ", Quoted(line), " is not key=value"));
    }
    if (absl::Status s = parser.Line(i + 1, line.substr(0, equals), line.substr(equals + 1));
        !s.ok()) {
      return s;
    }
  }
  request.set = parser.Take();
  return request;
}

std::string FormatGetReply(const DeviceState& state) {
  std::string out;
  out.reserve(256 + 256 * state.peers.size());
  out += "private_key=";
  AppendHex(state.private_key.data(), &out);
  absl::StrAppend(&out, "\nlisten_port=", state.listen_port, "\nfwmark=0\n");
  for (const PeerState& peer : state.peers) {
    out += "public_key=";
    AppendHex(peer.public_key.bytes.data(), &out);
    out += "\npreshared_key=";
    AppendHex(peer.preshared_key.data(), &out);
    out += "\nprotocol_version=1\n";
    if (peer.endpoint) absl::StrAppend(&out, "endpoint=", peer.endpoint->ToString(), "\n");
    absl::StrAppend(&out, "last_handshake_time_sec=", peer.last_handshake_unix_nanos / 1000000000,
                    "\nlast_handshake_time_nsec=", peer.last_handshake_unix_nanos % 1000000000,
                    "\ntx_bytes=", peer.tx_bytes, "\nrx_bytes=", peer.rx_bytes,
                    "\npersistent_keepalive_interval=", peer.persistent_keepalive, "\n");
    for (const Prefix& prefix : peer.allowed_ips) {
      absl::StrAppend(&out, "allowed_ip=", prefix.ToString(), "\n");
    }
  }
  out += "errno=0\n\n";
  return out;
}

std::string FormatErrnoReply(int errno_value) {
  return absl::StrCat("errno=", errno_value == 0 ? 0 : -errno_value, "\n\n");
}

int ErrnoFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 0;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kResourceExhausted:
      return EINVAL;
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kFailedPrecondition:
      return EPERM;
    case absl::StatusCode::kUnimplemented:
      return EOPNOTSUPP;
    default:
      return EIO;
  }
}

}  // namespace tunnelmesh::uapi
