// Fuzz target for the DNS message codec. Decode must never read out of bounds, and whatever it
// accepts must survive Encode: written again (in up to 65535 bytes, and in 512) and read back, it
// is the same message, except that at 512 records may have been dropped from the end with TC set
// as RFC 2181 9 asks. Besides the raw input it decodes a copy whose header counts are made small
// (random counts almost never fit the bytes), and it encodes a message built from the input with
// valid names of few labels, so that compression and truncation are reached often even by the
// non-coverage-guided replay driver. Mismatches abort().
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <variant>
#include <vector>

#include "absl/types/span.h"
#include "lib/dns/message.h"

namespace {

using tunnelmesh::IpAddress;
using namespace tunnelmesh::dns;  // NOLINT(build/namespaces): the target only uses this API.

// At least the wire length of `name` (its text plus the first length byte and the root; escapes
// only make the text longer).
size_t NameBound(const std::string& name) { return name.size() + 2; }

size_t RecordBound(const Record& record) {
  size_t size = NameBound(record.name) + 10;
  if (const auto* address = std::get_if<IpAddress>(&record.data)) {
    size += address->byte_length();
  } else if (const auto* name = std::get_if<std::string>(&record.data)) {
    size += NameBound(*name);
  } else if (const auto* soa = std::get_if<Soa>(&record.data)) {
    size += NameBound(soa->mname) + NameBound(soa->rname) + 20;
  } else {
    size += std::get<std::vector<uint8_t>>(record.data).size();
  }
  return size;
}

// What the header, the questions and the OPT record take at most: if that fits, Encode must not
// fail for lack of room.
size_t FixedBound(const Message& message) {
  size_t size = 12 + (message.edns.has_value() ? 11 : 0);
  for (const Question& question : message.questions) size += NameBound(question.name) + 4;
  return size;
}

// What the whole message takes at most, without compression: if that fits, nothing is dropped.
size_t FullBound(const Message& message) {
  size_t size = FixedBound(message);
  for (const auto* section : {&message.answers, &message.authority, &message.additional}) {
    for (const Record& record : *section) size += RecordBound(record);
  }
  return size;
}

bool IsPrefix(const std::vector<Record>& part, const std::vector<Record>& whole) {
  if (part.size() > whole.size()) return false;
  for (size_t i = 0; i < part.size(); ++i) {
    if (!(part[i] == whole[i])) return false;
  }
  return true;
}

// `bytes` is `original` encoded in at most `max_size` bytes: the same message, or one cut short
// from the end of its records (additional, then authority, then answers) with TC set if an answer
// or authority record went.
void CheckEncoded(const Message& original, const std::vector<uint8_t>& bytes, size_t max_size) {
  if (bytes.size() > max_size) std::abort();
  auto decoded = Decode(bytes);
  if (!decoded.ok()) std::abort();
  if (FullBound(original) <= max_size) {
    if (!(*decoded == original)) std::abort();
    return;
  }
  if (decoded->questions != original.questions || decoded->edns != original.edns) std::abort();
  if (!IsPrefix(decoded->answers, original.answers) ||
      !IsPrefix(decoded->authority, original.authority) ||
      !IsPrefix(decoded->additional, original.additional)) {
    std::abort();
  }
  const bool answers_cut = decoded->answers.size() < original.answers.size();
  const bool authority_cut = decoded->authority.size() < original.authority.size();
  if ((answers_cut && !decoded->authority.empty()) ||
      ((answers_cut || authority_cut) && !decoded->additional.empty())) {
    std::abort();
  }
  Header header = original.header;
  header.tc = original.header.tc || answers_cut || authority_cut;
  if (!(decoded->header == header)) std::abort();
}

// Encodes `message` at `max_size` and checks the result; `must_succeed` when its names are known
// to be valid and its RDATA of the right kind.
void CheckEncode(const Message& message, size_t max_size, bool must_succeed) {
  auto bytes = Encode(message, max_size);
  if (!bytes.ok()) {
    if (must_succeed && FixedBound(message) <= max_size) std::abort();
    return;
  }
  CheckEncoded(message, *bytes, max_size);
}

void CheckDecode(absl::Span<const uint8_t> bytes) {
  auto message = Decode(bytes);
  if (!message.ok()) return;
  // A decoded message has valid names and typed RDATA of the right kind: it can be written.
  CheckEncode(*message, kMaxMessageSize, /*must_succeed=*/true);
  CheckEncode(*message, kClassicUdpSize, /*must_succeed=*/true);
}

// Reads the fuzz input as a stream of choices; zeros once it runs out.
class Choices {
 public:
  explicit Choices(absl::Span<const uint8_t> data) : data_(data) {}
  uint8_t Byte() { return pos_ < data_.size() ? data_[pos_++] : 0; }
  size_t Below(size_t n) { return Byte() % n; }
  bool empty() const { return pos_ >= data_.size(); }

 private:
  absl::Span<const uint8_t> data_;
  size_t pos_ = 0;
};

// A valid name: a few labels from a small set (so that suffixes repeat and compress, in either
// case) or of arbitrary bytes, escaped as message.h says, at most 255 bytes on the wire.
std::string MakeName(Choices& choices) {
  static const char* const kLabels[] = {"mesh", "bob", "BOB", "ns", "a", "in-addr", "arpa"};
  std::string name;
  size_t wire = 1;
  const size_t labels = choices.Below(5);
  for (size_t i = 0; i < labels; ++i) {
    std::string label;
    if (choices.Below(4) != 0) {
      label = kLabels[choices.Below(std::size(kLabels))];
    } else {
      const size_t length = 1 + choices.Below(63);
      for (size_t j = 0; j < length; ++j) label.push_back(static_cast<char>(choices.Byte()));
    }
    size_t label_wire = 1 + label.size();
    if (wire + label_wire > 255) break;
    wire += label_wire;
    std::string escaped;
    for (char c : label) {
      if (c == '.' || c == '\\') escaped.push_back('\\');
      escaped.push_back(c);
    }
    name = name.empty() ? escaped : escaped + "." + name;
  }
  return name;
}

Record MakeRecord(Choices& choices) {
  Record record;
  record.name = MakeName(choices);
  record.ttl = choices.Byte();
  static const uint16_t kTypes[] = {kTypeA,   kTypeAaaa, kTypeNs,  kTypeCname,
                                    kTypePtr, kTypeSoa,  kTypeTxt, 65};
  record.type = kTypes[choices.Below(std::size(kTypes))];
  uint8_t bytes[16];
  for (uint8_t& b : bytes) b = choices.Byte();
  switch (record.type) {
    case kTypeA:
      record.data = IpAddress::V4(bytes);
      break;
    case kTypeAaaa:
      record.data = IpAddress::V6(bytes);
      break;
    case kTypeNs:
    case kTypeCname:
    case kTypePtr:
      record.data = MakeName(choices);
      break;
    case kTypeSoa:
      record.data = Soa{MakeName(choices), MakeName(choices), choices.Byte(), 1, 2, 3, 4};
      break;
    default:
      record.data = std::vector<uint8_t>(bytes, bytes + choices.Below(17));
  }
  return record;
}

void CheckBuilt(absl::Span<const uint8_t> data) {
  Choices choices(data);
  Message message;
  message.header.id = choices.Byte();
  message.header.qr = choices.Below(2);
  message.header.tc = choices.Below(8) == 0;
  message.header.rcode = static_cast<Rcode>(choices.Below(6));
  if (choices.Below(2)) {
    message.edns = Edns{static_cast<uint16_t>(512 + choices.Byte() * 16), 0, choices.Below(2) == 1};
    if (choices.Below(8) == 0) message.header.rcode = Rcode::kBadVers;
  }
  const size_t questions = choices.Below(3);
  for (size_t i = 0; i < questions; ++i) {
    message.questions.push_back({MakeName(choices), kTypeA, kClassIn});
  }
  std::vector<Record>* sections[] = {&message.answers, &message.authority, &message.additional};
  while (!choices.empty()) {
    sections[choices.Below(3)]->push_back(MakeRecord(choices));
  }
  const size_t limits[] = {kClassicUdpSize, 100 + data.size() % 400, kMaxMessageSize};
  for (size_t limit : limits) CheckEncode(message, limit, /*must_succeed=*/true);

  // Its encoding with a few bytes changed (chosen by the input's last bytes): messages that are
  // nearly valid reach the decoder's checks of pointers, lengths and counts.
  auto bytes = Encode(message);
  if (!bytes.ok() || bytes->empty()) return;
  for (size_t i = 0; i + 2 < data.size() && i < 6; i += 3) {
    const uint8_t* edit = &data[data.size() - 3 - i];
    (*bytes)[(edit[0] << 8 | edit[1]) % bytes->size()] = edit[2];
    CheckDecode(*bytes);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::Span<const uint8_t> input(data, size);
  CheckDecode(input);

  // The same bytes with small counts (0 to 2 questions, 0 to 3 records per section).
  if (size >= 12) {
    std::vector<uint8_t> copy(data, data + size);
    for (size_t i = 4; i < 12; i += 2) {
      copy[i] = 0;
      copy[i + 1] = static_cast<uint8_t>(copy[i + 1] % (i == 4 ? 3 : 4));
    }
    CheckDecode(copy);
  }

  CheckBuilt(input);
  return 0;
}
