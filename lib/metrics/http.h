// The HTTP/1.1 subset the metrics endpoint speaks (RFC 9112), sans-IO: parsing a request head
// from untrusted bytes, deciding the answer (GET or HEAD /metrics: 200; another method there: 405;
// any other path: 404; a malformed head: 400; an oversized one: 431), and writing a response.
// Every response closes the connection, so no body or pipelining is ever read.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "lib/metrics/exposition.h"

namespace tunnelmesh::metrics {

inline constexpr size_t kMaxRequestHead = 8192;

struct HttpRequest {
  std::string method;
  std::string target;  // As sent: "/metrics", "/metrics?x=1", ...
};

enum class HeadState {
  kIncomplete,  // No empty line yet and fewer than the limit's bytes: read more.
  kComplete,
  kMalformed,  // 400.
  kTooLarge,   // 431: no end of the head within the limit.
};

struct ParsedHead {
  HeadState state = HeadState::kIncomplete;
  HttpRequest request;   // Set when kComplete.
  size_t head_size = 0;  // Bytes of the head, the empty line included (kComplete).
};

// Parses the request line and header lines of `bytes` (what arrived so far). Lines end in CRLF or,
// leniently, LF. The request line is METHOD SP TARGET SP HTTP/1.x with a token method and an
// origin-form target ("/..."); header lines are NAME ":" VALUE with a token name; obsolete line
// folding is malformed. Header values are not interpreted.
ParsedHead ParseRequestHead(std::string_view bytes, size_t max_head = kMaxRequestHead);

struct HttpResponse {
  int status = 200;
  std::string reason;
  std::string content_type;
  std::string body;
  std::string allow;       // The Allow header of a 405.
  bool head_only = false;  // HEAD: the headers of the GET answer, no body.
};

// The answer to a parsed head. `render` produces the metrics body as std::optional<std::string>
// (called only for GET and HEAD on `path`); nullopt answers 503 (the component did not answer in
// time).
template <typename Render>
HttpResponse Answer(const ParsedHead& head, std::string_view path, Render&& render);

// The answer to a head that cannot be served (kMalformed, kTooLarge), or 503 when the server is
// full.
HttpResponse ErrorResponse(int status);

// Status line, Content-Type, Content-Length, Connection: close, Allow, the empty line and the body.
std::string SerializeResponse(const HttpResponse& response);

// The path part of a target (before '?').
std::string_view TargetPath(std::string_view target);

template <typename Render>
HttpResponse Answer(const ParsedHead& head, std::string_view path, Render&& render) {
  if (head.state == HeadState::kMalformed) return ErrorResponse(400);
  if (head.state == HeadState::kTooLarge) return ErrorResponse(431);
  if (TargetPath(head.request.target) != path) return ErrorResponse(404);
  const std::string& method = head.request.method;
  if (method != "GET" && method != "HEAD") return ErrorResponse(405);
  std::optional<std::string> body = render();
  if (!body.has_value()) return ErrorResponse(503);
  HttpResponse response;
  response.status = 200;
  response.reason = "OK";
  response.content_type = kContentType;
  response.body = *std::move(body);
  response.head_only = method == "HEAD";
  return response;
}

}  // namespace tunnelmesh::metrics
