#include "operator/kube/api_status.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tunnelmesh::kube {
namespace {

using ::testing::HasSubstr;

std::string StatusBody(int code, const std::string& reason, const std::string& message) {
  return nlohmann::json{{"kind", "Status"},   {"apiVersion", "v1"}, {"status", "Failure"},
                        {"message", message}, {"reason", reason},   {"code", code}}
      .dump();
}

TEST(StatusFromResponse, SuccessIsOk) {
  EXPECT_TRUE(StatusFromResponse(200, "{}", "GET /x").ok());
  EXPECT_TRUE(StatusFromResponse(201, "", "POST /x").ok());
}

TEST(StatusFromResponse, MapsCodesAndKeepsTheServersMessage) {
  struct Case {
    int http;
    std::string reason;
    absl::StatusCode want;
  };
  const Case cases[] = {
      {404, "NotFound", absl::StatusCode::kNotFound},
      {409, "AlreadyExists", absl::StatusCode::kAlreadyExists},
      {409, "Conflict", absl::StatusCode::kAborted},
      {410, "Expired", absl::StatusCode::kOutOfRange},
      {401, "Unauthorized", absl::StatusCode::kUnauthenticated},
      {403, "Forbidden", absl::StatusCode::kPermissionDenied},
      {422, "Invalid", absl::StatusCode::kInvalidArgument},
      {400, "BadRequest", absl::StatusCode::kInvalidArgument},
      {429, "TooManyRequests", absl::StatusCode::kUnavailable},
      {500, "InternalError", absl::StatusCode::kUnavailable},
      {503, "ServiceUnavailable", absl::StatusCode::kUnavailable},
      {504, "Timeout", absl::StatusCode::kUnavailable},
      {405, "MethodNotAllowed", absl::StatusCode::kUnimplemented},
      {418, "", absl::StatusCode::kUnknown},
  };
  for (const Case& c : cases) {
    const absl::Status status =
        StatusFromResponse(c.http, StatusBody(c.http, c.reason, "the server says why"), "GET /p");
    EXPECT_EQ(status.code(), c.want) << c.http << " " << c.reason;
    EXPECT_THAT(status.message(), HasSubstr("GET /p")) << c.http;
    EXPECT_THAT(status.message(), HasSubstr("HTTP " + std::to_string(c.http))) << c.http;
    EXPECT_THAT(status.message(), HasSubstr("the server says why")) << c.http;
  }
}

TEST(StatusFromResponse, ForbiddenNamesVerbAndResource) {
  const absl::Status status = StatusFromResponse(
      403,
      StatusBody(403, "Forbidden",
                 "configmaps \"a\" is forbidden: User \"nobody\" cannot get resource "
                 "\"configmaps\" in API group \"\" in the namespace \"default\""),
      "GET /api/v1/namespaces/default/configmaps/a");
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(status.message(), HasSubstr("cannot get resource \"configmaps\""));
}

TEST(StatusFromResponse, InvalidKeepsTheFieldMessage) {
  const absl::Status status = StatusFromResponse(
      422,
      StatusBody(422, "Invalid",
                 "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""),
      "POST /api/v1/namespaces/default/configmaps");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("metadata.name: Invalid value"));
}

TEST(StatusFromResponse, BodyThatIsNotAStatus) {
  const absl::Status status = StatusFromResponse(502, "Bad Gateway\r\n<html>", "GET /p");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("HTTP 502: Bad Gateway"));
  EXPECT_THAT(status.message(), ::testing::Not(HasSubstr("\r")));
  EXPECT_EQ(StatusFromResponse(404, "", "GET /p").code(), absl::StatusCode::kNotFound);
}

TEST(StatusFromApiStatus, WatchErrorEventUsesTheStatusCode) {
  const nlohmann::json gone =
      nlohmann::json::parse(StatusBody(410, "Expired", "too old resource version: 5 (17)"));
  const absl::Status status = StatusFromApiStatus(gone, 200, "WATCH /api/v1/configmaps");
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(IsGone(status));
  EXPECT_THAT(status.message(), HasSubstr("too old resource version"));
  // No code at all: still an error.
  EXPECT_EQ(StatusFromApiStatus(nlohmann::json::object(), 200, "WATCH /x").code(),
            absl::StatusCode::kUnknown);
}

TEST(Predicates, MatchTheirCodes) {
  EXPECT_TRUE(IsGone(absl::OutOfRangeError("")));
  EXPECT_TRUE(IsConflict(absl::AbortedError("")));
  EXPECT_FALSE(IsConflict(absl::AlreadyExistsError("")));
}

}  // namespace
}  // namespace tunnelmesh::kube
