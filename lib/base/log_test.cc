#include "gtest/gtest.h"
#include "lib/base/log_format.h"

namespace tunnelmesh {
namespace {

TEST(JsonLogLineTest, TimeLevelMessageAndFields) {
  EXPECT_EQ(JsonLogLine(1767323045678, "info", "handshake complete peer=beta endpoint=1.2.3.4:5"),
            "{\"time\":\"2026-01-02T03:04:05.678Z\",\"level\":\"info\","
            "\"msg\":\"handshake complete peer=beta endpoint=1.2.3.4:5\","
            "\"peer\":\"beta\",\"endpoint\":\"1.2.3.4:5\"}");
}

TEST(JsonLogLineTest, WarningIsWarnAndQuotedValuesAndPunctuation) {
  EXPECT_EQ(JsonLogLine(0, "warning", "refused name=\"a b\" port=7700; done"),
            "{\"time\":\"1970-01-01T00:00:00.000Z\",\"level\":\"warn\","
            "\"msg\":\"refused name=\\\"a b\\\" port=7700; done\","
            "\"name\":\"a b\",\"port\":\"7700\"}");
}

TEST(JsonLogLineTest, EscapesControlCharactersAndSkipsReservedAndRepeatedKeys) {
  EXPECT_EQ(JsonLogLine(0, "error", "x\n\"\\\x01 msg=a level=b k=1 k=2 Bad=3 =4"),
            "{\"time\":\"1970-01-01T00:00:00.000Z\",\"level\":\"error\","
            "\"msg\":\"x\\n\\\"\\\\\\u0001 msg=a level=b k=1 k=2 Bad=3 =4\",\"k\":\"1\"}");
}

}  // namespace
}  // namespace tunnelmesh
