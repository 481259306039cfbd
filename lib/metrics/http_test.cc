#include "lib/metrics/http.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

HttpResponse AnswerText(std::string_view bytes) {
  return Answer(ParseRequestHead(bytes), "/metrics",
                [] { return std::optional<std::string>("body\n"); });
}

TEST(HttpTest, GetMetrics) {
  const ParsedHead head =
      ParseRequestHead("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
  ASSERT_EQ(head.state, HeadState::kComplete);
  EXPECT_EQ(head.request.method, "GET");
  EXPECT_EQ(head.request.target, "/metrics");
  const std::string response = SerializeResponse(AnswerText("GET /metrics HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(response,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: 5\r\nConnection: close\r\n\r\nbody\n");
}

TEST(HttpTest, QueryStringAndBareLineFeedsAndHttp10) {
  EXPECT_EQ(AnswerText("GET /metrics?name[]=x HTTP/1.0\n\n").status, 200);
  EXPECT_EQ(AnswerText("\r\nGET /metrics HTTP/1.1\r\n\r\n").status, 200);
}

TEST(HttpTest, HeadHasHeadersButNoBody) {
  const std::string response = SerializeResponse(AnswerText("HEAD /metrics HTTP/1.1\r\n\r\n"));
  EXPECT_THAT(response, HasSubstr("Content-Length: 5\r\n"));
  EXPECT_THAT(response, ::testing::EndsWith("\r\n\r\n"));
}

TEST(HttpTest, OtherPathsAre404AndOtherMethods405) {
  EXPECT_EQ(AnswerText("GET / HTTP/1.1\r\n\r\n").status, 404);
  EXPECT_EQ(AnswerText("GET /metricsx HTTP/1.1\r\n\r\n").status, 404);
  EXPECT_EQ(AnswerText("POST /other HTTP/1.1\r\n\r\n").status, 404);
  const HttpResponse post = AnswerText("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
  EXPECT_EQ(post.status, 405);
  EXPECT_THAT(SerializeResponse(post), HasSubstr("Allow: GET, HEAD\r\n"));
}

TEST(HttpTest, IncompleteUntilTheEmptyLine) {
  EXPECT_EQ(ParseRequestHead("").state, HeadState::kIncomplete);
  EXPECT_EQ(ParseRequestHead("GET /metr").state, HeadState::kIncomplete);
  EXPECT_EQ(ParseRequestHead("GET /metrics HTTP/1.1\r\nHost: x\r\n").state, HeadState::kIncomplete);
}

TEST(HttpTest, MalformedHeads) {
  for (const char* bad : {
           "GET /metrics\r\n\r\n",                              // No version.
           "GET /metrics HTTP/2.0\r\n\r\n",                     // Not HTTP/1.
           "GET  /metrics HTTP/1.1\r\n\r\n",                    // Two spaces.
           "G(T /metrics HTTP/1.1\r\n\r\n",                     // Method not a token.
           "GET http://x/metrics HTTP/1.1\r\n\r\n",             // Absolute form.
           "GET /me\x01trics HTTP/1.1\r\n\r\n",                 // Control character.
           "GET /metrics HTTP/1.1\r\nNo colon\r\n\r\n",         // Header without a colon.
           "GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",  // Obsolete folding.
           "GET /metrics HTTP/1.1\r\nBad Name: b\r\n\r\n",      // Space in the name.
           "GET /metrics HTTP/1.1\r\nA: b\x7f\r\n\r\n",         // DEL in a value.
       }) {
    EXPECT_EQ(ParseRequestHead(bad).state, HeadState::kMalformed) << bad;
    EXPECT_EQ(AnswerText(bad).status, 400) << bad;
  }
}

TEST(HttpTest, HeadOverTheLimitIsTooLarge) {
  std::string head = "GET /metrics HTTP/1.1\r\n";
  while (head.size() < kMaxRequestHead) head += "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
  EXPECT_EQ(ParseRequestHead(head).state, HeadState::kTooLarge);
  EXPECT_EQ(ParseRequestHead(head + "\r\n").state, HeadState::kTooLarge);
  EXPECT_EQ(AnswerText(head).status, 431);
  // Within a smaller limit the same applies.
  EXPECT_EQ(ParseRequestHead("GET /metrics HTTP/1.1\r\n\r\n", 10).state, HeadState::kTooLarge);
}

TEST(HttpTest, RenderFailureIs503) {
  const HttpResponse response = Answer(ParseRequestHead("GET /metrics HTTP/1.1\r\n\r\n"),
                                       "/metrics", [] { return std::optional<std::string>(); });
  EXPECT_EQ(response.status, 503);
}

TEST(HttpTest, ErrorResponsesSayWhatToDo) {
  EXPECT_THAT(SerializeResponse(ErrorResponse(404)), HasSubstr("/metrics"));
  EXPECT_THAT(SerializeResponse(ErrorResponse(503)),
              StartsWith("HTTP/1.1 503 Service Unavailable"));
}

}  // namespace
}  // namespace tunnelmesh::metrics
