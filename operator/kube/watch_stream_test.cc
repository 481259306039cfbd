#include "operator/kube/watch_stream.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tunnelmesh::kube {
namespace {

std::string Event(const std::string& type, const std::string& name) {
  return nlohmann::json{{"type", type}, {"object", {{"metadata", {{"name", name}}}}}}.dump();
}

// Feeds `stream` cut at every `step` bytes and returns the lines seen.
std::vector<std::string> SplitInChunks(const std::string& stream, size_t step) {
  WatchLineSplitter splitter;
  std::vector<std::string> lines;
  const auto collect = [&](std::string_view line) {
    lines.emplace_back(line);
    return absl::OkStatus();
  };
  for (size_t at = 0; at < stream.size(); at += step) {
    EXPECT_TRUE(splitter.Feed(std::string_view(stream).substr(at, step), collect).ok());
  }
  EXPECT_TRUE(splitter.Finish(collect).ok());
  return lines;
}

TEST(WatchLineSplitter, EventsSplitAcrossChunks) {
  const std::string a = Event("ADDED", "a"), b = Event("MODIFIED", "b"), c = Event("DELETED", "c");
  const std::string stream = a + "\n" + b + "\r\n\n" + c + "\n";
  for (size_t step = 1; step <= stream.size(); ++step) {
    EXPECT_EQ(SplitInChunks(stream, step), (std::vector<std::string>{a, b, c})) << step;
  }
}

TEST(WatchLineSplitter, UnterminatedLastLineComesAtFinish) {
  EXPECT_EQ(SplitInChunks("x\ny", 2), (std::vector<std::string>{"x", "y"}));
}

TEST(WatchLineSplitter, StopsAtTheFirstError) {
  WatchLineSplitter splitter;
  int calls = 0;
  const absl::Status status = splitter.Feed("a\nb\nc\n", [&](std::string_view line) {
    ++calls;
    return line == "b" ? absl::CancelledError("stop") : absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 2);
}

TEST(WatchLineSplitter, RefusesOverlongLines) {
  WatchLineSplitter splitter(8);
  const auto ignore = [](std::string_view) { return absl::OkStatus(); };
  EXPECT_TRUE(splitter.Feed("1234", ignore).ok());
  EXPECT_EQ(splitter.Feed("56789", ignore).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(splitter.buffered(), 0u);
}

TEST(ParseWatchEvent, GoodEvents) {
  absl::StatusOr<WatchEvent> event = ParseWatchEvent(Event("ADDED", "a"));
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_EQ(event->type, "ADDED");
  EXPECT_EQ(ObjectName(event->object), "a");
  event = ParseWatchEvent(
      R"({"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}})");
  ASSERT_TRUE(event.ok());
  EXPECT_EQ(event->type, "ERROR");
}

TEST(ParseWatchEvent, BadEventsSayWhatIsWrong) {
  EXPECT_EQ(ParseWatchEvent("{not json").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseWatchEvent("[1]").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseWatchEvent(R"({"object":{}})").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseWatchEvent(R"({"type":"ADDED","object":1})").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseWatchEvent(R"({"type":"EXPLODED","object":{}})").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tunnelmesh::kube
