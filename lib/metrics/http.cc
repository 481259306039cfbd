#include "lib/metrics/http.h"

#include <algorithm>

namespace tunnelmesh::metrics {
namespace {

// RFC 9110 5.6.2 tchar.
bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// Visible ASCII, no spaces: what an origin-form target may hold (RFC 3986 characters; anything
// outside is malformed rather than interpreted).
bool IsTargetChar(char c) { return c > 0x20 && c < 0x7f; }

// Splits off the next line of `rest` (without CRLF or LF); false when no line end is in it.
bool NextLine(std::string_view* rest, std::string_view* line) {
  const size_t lf = rest->find('\n');
  if (lf == std::string_view::npos) return false;
  *line = rest->substr(0, lf);
  if (!line->empty() && line->back() == '\r') line->remove_suffix(1);
  rest->remove_prefix(lf + 1);
  return true;
}

bool ParseRequestLine(std::string_view line, HttpRequest* request) {
  const size_t first = line.find(' ');
  if (first == std::string_view::npos) return false;
  const size_t second = line.find(' ', first + 1);
  if (second == std::string_view::npos) return false;
  const std::string_view method = line.substr(0, first);
  const std::string_view target = line.substr(first + 1, second - first - 1);
  const std::string_view version = line.substr(second + 1);
  if (!IsToken(method)) return false;
  if (target.empty() || target[0] != '/' ||
      !std::all_of(target.begin(), target.end(), IsTargetChar))
    return false;
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return false;
  request->method = std::string(method);
  request->target = std::string(target);
  return true;
}

bool IsHeaderLine(std::string_view line) {
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos || !IsToken(line.substr(0, colon))) return false;
  // Field values: visible characters, spaces and tabs (RFC 9110 5.5); no control characters.
  return std::all_of(line.begin() + colon + 1, line.end(), [](char c) {
    const unsigned char u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7f);
  });
}

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 503:
      return "Service Unavailable";
  }
  return "Error";
}

}  // namespace

std::string_view TargetPath(std::string_view target) {
  return target.substr(0, std::min(target.find('?'), target.size()));
}

ParsedHead ParseRequestHead(std::string_view bytes, size_t max_head) {
  ParsedHead parsed;
  const std::string_view window = bytes.substr(0, std::min(bytes.size(), max_head));
  std::string_view rest = window;
  std::string_view line;
  // RFC 9112 2.2: empty lines before the request line are ignored.
  bool have_request_line = false;
  while (NextLine(&rest, &line)) {
    if (!have_request_line) {
      if (line.empty()) continue;
      if (!ParseRequestLine(line, &parsed.request)) {
        parsed.state = HeadState::kMalformed;
        return parsed;
      }
      have_request_line = true;
      continue;
    }
    if (line.empty()) {
      parsed.state = HeadState::kComplete;
      parsed.head_size = window.size() - rest.size();
      return parsed;
    }
    if (line[0] == ' ' || line[0] == '\t' || !IsHeaderLine(line)) {
      parsed.state = HeadState::kMalformed;
      return parsed;
    }
  }
  parsed.request = {};
  parsed.state = bytes.size() >= max_head ? HeadState::kTooLarge : HeadState::kIncomplete;
  return parsed;
}

HttpResponse ErrorResponse(int status) {
  HttpResponse response;
  response.status = status;
  response.reason = Reason(status);
  response.content_type = "text/plain; charset=utf-8";
  response.body = response.reason + "\n";
  if (status == 503) response.body = "Service Unavailable: the metrics were not ready in time\n";
  if (status == 404) response.body = "Not Found: the metrics are at /metrics\n";
  if (status == 405) {
    response.allow = "GET, HEAD";
    response.body = "Method Not Allowed: /metrics answers GET and HEAD\n";
  }
  return response;
}

std::string SerializeResponse(const HttpResponse& response) {
  std::string out = "HTTP/1.1 " + std::to_string(response.status) + " " +
                    (response.reason.empty() ? Reason(response.status) : response.reason) + "\r\n";
  if (!response.content_type.empty()) out += "Content-Type: " + response.content_type + "\r\n";
  out += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
  if (!response.allow.empty()) out += "Allow: " + response.allow + "\r\n";
  out += "Connection: close\r\n\r\n";
  if (!response.head_only) out += response.body;
  return out;
}

}  // namespace tunnelmesh::metrics
