#include "lib/dns/message.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "lib/base/byte_io.h"
#include "lib/base/status_macros.h"

namespace tunnelmesh::dns {
namespace {

// RFC 1035 2.3.4 and 4.1.
constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxLabelLength = 63;
constexpr size_t kMaxNameWireLength = 255;
// The smallest question is the root name and TYPE and CLASS; the smallest record adds TTL and
// RDLENGTH. Decode checks the header's counts against these before reserving anything.
constexpr size_t kMinQuestionSize = 1 + 4;
constexpr size_t kMinRecordSize = 1 + 10;
// The OPT record as Encode writes it: the root, TYPE, CLASS, TTL and an RDLENGTH of 0.
constexpr size_t kOptRecordSize = 11;
// A compression pointer holds a 14-bit offset (RFC 1035 4.1.4).
constexpr size_t kPointerLimit = 0x4000;
// Header::rcode with EDNS: 8 bits from the OPT record above the header's 4 (RFC 6891 6.1.3).
constexpr uint16_t kMaxRcode = 0x0FFF;

// Debian's abseil keeps its own string_view type, which does not convert from std::string_view.
absl::string_view AsAbsl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

// A name as it appears inside an error message: quoted and printable.
std::string Quote(std::string_view text) {
  return absl::StrCat("\"", absl::CHexEscape(AsAbsl(text)), "\"");
}

// RFC 4343: only A-Z fold; bytes above 0x7F are compared as they are.
char FoldAscii(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreAsciiCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (FoldAscii(a[i]) != FoldAscii(b[i])) return false;
  }
  return true;
}

// "question 1", "answer 3": the 1-based place of an entry, for error messages.
std::string Place(const char* section, size_t index) {
  return absl::StrCat(section, " ", index + 1);
}

// ---- Decoding ---------------------------------------------------------------------------------

// The offset of `reader` in `view`, the buffer it was constructed over.
size_t Position(absl::Span<const uint8_t> view, const ByteReader& reader) {
  return view.size() - reader.remaining();
}

// Appends one label in presentation form: '.' and '\' inside it escaped so that splitting the
// name on unescaped dots gives the labels back (see message.h).
void AppendLabel(absl::Span<const uint8_t> label, std::string* out) {
  for (uint8_t byte : label) {
    const char c = static_cast<char>(byte);
    if (c == '.' || c == '\\') out->push_back('\\');
    out->push_back(c);
  }
}

// Reads the name at `reader`'s position into `*out`, following compression pointers (RFC 1035
// 4.1.4). `view` is the buffer `reader` reads: the message from its first byte up to the end of
// the field being read, so that a name inside RDATA cannot run past RDLENGTH. Pointers index it.
//
// Every pointer must point before the start of the run of labels it ends (the name itself at
// first, then the target of the previous pointer). Targets thus strictly decrease, which makes
// loops impossible, and every encoder that only points at names written earlier complies.
absl::Status ReadName(absl::Span<const uint8_t> view, ByteReader& reader, std::string* out) {
  out->clear();
  size_t wire_length = 1;  // The root label that ends every name.
  size_t run_start = Position(view, reader);
  ByteReader jumped(view);
  ByteReader* current = &reader;
  for (;;) {
    uint8_t length;
    if (!current->ReadU8(&length)) return absl::InvalidArgumentError("cut short");
    if (length == 0) return absl::OkStatus();
    if ((length & 0xC0) == 0xC0) {
      uint8_t low;
      if (!current->ReadU8(&low)) return absl::InvalidArgumentError("cut short");
      const size_t target = static_cast<size_t>(length & 0x3F) << 8 | low;
      if (target >= run_start) {
        return absl::InvalidArgumentError(absl::StrCat("compression pointer to offset ", target,
                                                       " does not point before ", run_start));
      }
      jumped = ByteReader(view);
      jumped.Skip(target);  // Cannot fail: target < run_start <= view.size().
      current = &jumped;
      run_start = target;
      continue;
    }
    if (length > kMaxLabelLength) {
      // 0x40 and 0x80 were extended label types (RFC 6891 5 deprecates them); none is in use.
      return absl::InvalidArgumentError(absl::StrCat("label longer than 63 bytes (length byte 0x",
                                                     absl::Hex(length, absl::kZeroPad2), ")"));
    }
    wire_length += 1 + length;
    if (wire_length > kMaxNameWireLength) {
      return absl::InvalidArgumentError("longer than 255 bytes");
    }
    absl::Span<const uint8_t> label;
    if (!current->ReadBytes(length, &label)) return absl::InvalidArgumentError("cut short");
    if (!out->empty()) out->push_back('.');
    AppendLabel(label, out);
  }
}

// Decodes the RDATA of a record (RFC 1035 3.3, 3.4.1; RFC 3596 2.2) that starts at `start` and
// is `length` bytes long; the caller has checked that the bytes are there. A, AAAA and the
// name-bearing types of RFC 1035 become typed values and must fill RDLENGTH exactly; everything
// else is kept as raw bytes.
absl::Status ReadRdata(absl::Span<const uint8_t> message, size_t start, size_t length,
                       uint16_t type, uint16_t rclass, RData* out) {
  const absl::Span<const uint8_t> view = message.first(start + length);
  ByteReader reader(view);
  reader.Skip(start);

  // A and AAAA are addresses in class IN only (RFC 1035 3.4.1 defines A for the Internet; CHAOS
  // has its own format). With another class their format is not known here, which makes them RRs
  // of unknown type, carried as opaque bytes (RFC 3597 2 and 3).
  if ((type == kTypeA || type == kTypeAaaa) && rclass == kClassIn) {
    const size_t want = type == kTypeA ? 4 : 16;
    if (length != want) {
      return absl::InvalidArgumentError(
          absl::StrCat(TypeName(type), " RDATA is ", length, " bytes, not ", want));
    }
    absl::Span<const uint8_t> bytes;
    reader.ReadBytes(want, &bytes);
    *out = type == kTypeA ? IpAddress::V4(bytes.data()) : IpAddress::V6(bytes.data());
    return absl::OkStatus();
  }

  if (type == kTypeNs || type == kTypeCname || type == kTypePtr) {
    std::string name;
    RETURN_IF_ERROR(Annotate(ReadName(view, reader, &name), "RDATA name"));
    if (reader.remaining() != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "RDLENGTH ", length, " has ", reader.remaining(), " bytes left after the name"));
    }
    *out = std::move(name);
    return absl::OkStatus();
  }

  if (type == kTypeSoa) {
    Soa soa;
    RETURN_IF_ERROR(Annotate(ReadName(view, reader, &soa.mname), "RDATA MNAME"));
    RETURN_IF_ERROR(Annotate(ReadName(view, reader, &soa.rname), "RDATA RNAME"));
    if (!reader.ReadBe32(&soa.serial) || !reader.ReadBe32(&soa.refresh) ||
        !reader.ReadBe32(&soa.retry) || !reader.ReadBe32(&soa.expire) ||
        !reader.ReadBe32(&soa.minimum)) {
      return absl::InvalidArgumentError(absl::StrCat("SOA RDATA cut short by RDLENGTH ", length));
    }
    if (reader.remaining() != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "RDLENGTH ", length, " has ", reader.remaining(), " bytes left after the SOA fields"));
    }
    *out = std::move(soa);
    return absl::OkStatus();
  }

  absl::Span<const uint8_t> bytes;
  reader.ReadBytes(length, &bytes);
  *out = std::vector<uint8_t>(bytes.begin(), bytes.end());
  return absl::OkStatus();
}

// A record's fixed fields (RFC 1035 4.1.3) before its RDATA is interpreted.
struct RecordHead {
  std::string name;
  uint16_t type = 0;
  uint16_t rclass = 0;
  uint32_t ttl = 0;
  uint16_t rdlength = 0;
  size_t rdata_start = 0;
};

absl::Status ReadRecordHead(absl::Span<const uint8_t> message, ByteReader& reader,
                            RecordHead* head) {
  RETURN_IF_ERROR(Annotate(ReadName(message, reader, &head->name), "name"));
  if (!reader.ReadBe16(&head->type) || !reader.ReadBe16(&head->rclass) ||
      !reader.ReadBe32(&head->ttl) || !reader.ReadBe16(&head->rdlength)) {
    return absl::InvalidArgumentError("cut short in TYPE, CLASS, TTL or RDLENGTH");
  }
  head->rdata_start = Position(message, reader);
  if (!reader.Skip(head->rdlength)) {
    return absl::InvalidArgumentError(absl::StrCat("RDATA cut short: RDLENGTH ", head->rdlength,
                                                   ", ", message.size() - head->rdata_start,
                                                   " bytes left"));
  }
  return absl::OkStatus();
}

// ---- Encoding ---------------------------------------------------------------------------------

// A name parsed from presentation form: its uncompressed wire form and, per label, where the
// label starts in the wire form and in the text (so that the text from there on is the key of
// that suffix in the compression table).
struct WireName {
  static constexpr size_t kMaxLabels = kMaxNameWireLength / 2;
  std::array<uint8_t, kMaxNameWireLength> wire;
  size_t size = 0;
  size_t label_count = 0;
  std::array<uint8_t, kMaxLabels> wire_offset;
  std::array<size_t, kMaxLabels> text_offset;
};

// Validates `text` (labels of 1 to 63 bytes, at most 255 bytes in wire form, '\' only before
// '.' or '\') and converts it. The root is "".
absl::Status ParseName(std::string_view text, WireName* name) {
  name->size = 0;
  name->label_count = 0;
  size_t i = 0;
  while (i < text.size()) {
    // One label, from `i` to the next unescaped dot or the end.
    if (name->size + 1 >= kMaxNameWireLength) {
      return absl::InvalidArgumentError("longer than 255 bytes");
    }
    const size_t length_at = name->size++;
    name->wire_offset[name->label_count] = static_cast<uint8_t>(length_at);
    name->text_offset[name->label_count] = i;
    ++name->label_count;
    size_t length = 0;
    while (i < text.size() && text[i] != '.') {
      char c = text[i++];
      if (c == '\\') {
        if (i == text.size() || (text[i] != '.' && text[i] != '\\')) {
          return absl::InvalidArgumentError("'\\' that does not escape '.' or '\\'");
        }
        c = text[i++];
      }
      if (++length > kMaxLabelLength) {
        return absl::InvalidArgumentError("label longer than 63 bytes");
      }
      // Room for this byte and the root label after it.
      if (name->size + 1 >= kMaxNameWireLength) {
        return absl::InvalidArgumentError("longer than 255 bytes");
      }
      name->wire[name->size++] = static_cast<uint8_t>(c);
    }
    if (length == 0) {
      return absl::InvalidArgumentError(
          "empty label (names are written without the trailing dot; the root is \"\")");
    }
    name->wire[length_at] = static_cast<uint8_t>(length);
    if (i < text.size()) {
      ++i;  // The dot.
      if (i == text.size()) {
        return absl::InvalidArgumentError(
            "empty label (names are written without the trailing dot; the root is \"\")");
      }
    }
  }
  name->wire[name->size++] = 0;
  return absl::OkStatus();
}

// Appends to a message under construction, compressing names against those already written.
class Writer {
 public:
  explicit Writer(std::vector<uint8_t>* out) : out_(*out) {}

  size_t size() const { return out_.size(); }
  void Truncate(size_t size) { out_.resize(size); }
  void U16(uint16_t v) {
    out_.push_back(static_cast<uint8_t>(v >> 8));
    out_.push_back(static_cast<uint8_t>(v));
  }
  void U32(uint32_t v) {
    U16(static_cast<uint16_t>(v >> 16));
    U16(static_cast<uint16_t>(v));
  }
  void PutU16At(size_t offset, uint16_t v) {
    out_[offset] = static_cast<uint8_t>(v >> 8);
    out_[offset + 1] = static_cast<uint8_t>(v);
  }
  void Raw(absl::Span<const uint8_t> bytes) { out_.insert(out_.end(), bytes.begin(), bytes.end()); }

  // Writes `text` (which must outlive the Writer: the table keeps views into it), as a pointer to
  // the longest suffix already written, after the labels in front of it (RFC 1035 4.1.4). The
  // table is keyed by the exact text, so that a name keeps its case through a round trip: a
  // question's spelling must come back as it was (resolvers that randomize case check it).
  absl::Status Name(std::string_view text) {
    WireName name;
    RETURN_IF_ERROR(ParseName(text, &name));
    for (size_t i = 0; i < name.label_count; ++i) {
      const std::string_view suffix = text.substr(name.text_offset[i]);
      if (std::optional<uint16_t> at = Find(suffix)) {
        U16(static_cast<uint16_t>(0xC000 | *at));
        return absl::OkStatus();
      }
      if (out_.size() < kPointerLimit) Add(suffix, static_cast<uint16_t>(out_.size()));
      const size_t begin = name.wire_offset[i];
      const size_t end = i + 1 < name.label_count ? name.wire_offset[i + 1] : name.size - 1;
      out_.insert(out_.end(), name.wire.begin() + begin, name.wire.begin() + end);
    }
    out_.push_back(0);
    return absl::OkStatus();
  }

 private:
  // An answer holds a handful of names: a short array searched in order costs less than hashing
  // (this is on every query's path). Big messages (decoded ones re-encoded, zone-sized answers
  // over TCP) move to the hash table once the array is full.
  static constexpr size_t kInlineSuffixes = 24;

  std::optional<uint16_t> Find(std::string_view suffix) const {
    for (size_t i = 0; i < inline_count_; ++i) {
      if (inline_[i].first == suffix) return inline_[i].second;
    }
    if (auto it = more_.find(AsAbsl(suffix)); it != more_.end()) return it->second;
    return std::nullopt;
  }
  void Add(std::string_view suffix, uint16_t offset) {
    if (inline_count_ < kInlineSuffixes) {
      inline_[inline_count_++] = {suffix, offset};
    } else {
      more_.emplace(AsAbsl(suffix), offset);
    }
  }

  std::vector<uint8_t>& out_;
  std::array<std::pair<std::string_view, uint16_t>, kInlineSuffixes> inline_;
  size_t inline_count_ = 0;
  absl::flat_hash_map<absl::string_view, uint16_t> more_;
};

// RDATA of `record`, which must be of the kind its type calls for, so that what Encode writes
// Decode reads back as the same value.
absl::Status WriteRdata(const Record& record, Writer& writer) {
  const bool address_type =
      (record.type == kTypeA || record.type == kTypeAaaa) && record.rclass == kClassIn;
  const bool name_type =
      record.type == kTypeNs || record.type == kTypeCname || record.type == kTypePtr;
  if (const auto* address = std::get_if<IpAddress>(&record.data)) {
    if (!address_type || address->is_v4() != (record.type == kTypeA)) {
      return absl::InvalidArgumentError(
          absl::StrCat("RDATA is the address ", address->ToString(), ", but the record is ",
                       TypeName(record.type), " in class ", record.rclass,
                       " (addresses are for A (IPv4) and AAAA (IPv6) in class IN)"));
    }
    writer.Raw(absl::MakeConstSpan(address->bytes(), address->byte_length()));
    return absl::OkStatus();
  }
  if (const auto* name = std::get_if<std::string>(&record.data)) {
    if (!name_type) {
      return absl::InvalidArgumentError(absl::StrCat("RDATA is a name, but the record is ",
                                                     TypeName(record.type),
                                                     " (names are for NS, CNAME and PTR)"));
    }
    // RFC 3597 4: compression in RDATA only for the types of RFC 1035, which these are.
    return Annotate(writer.Name(*name), absl::StrCat("RDATA name ", Quote(*name)));
  }
  if (const auto* soa = std::get_if<Soa>(&record.data)) {
    if (record.type != kTypeSoa) {
      return absl::InvalidArgumentError(
          absl::StrCat("RDATA is an SOA, but the record is ", TypeName(record.type)));
    }
    RETURN_IF_ERROR(
        Annotate(writer.Name(soa->mname), absl::StrCat("RDATA MNAME ", Quote(soa->mname))));
    RETURN_IF_ERROR(
        Annotate(writer.Name(soa->rname), absl::StrCat("RDATA RNAME ", Quote(soa->rname))));
    for (uint32_t v : {soa->serial, soa->refresh, soa->retry, soa->expire, soa->minimum}) {
      writer.U32(v);
    }
    return absl::OkStatus();
  }
  const auto& raw = std::get<std::vector<uint8_t>>(record.data);
  if (address_type || name_type || record.type == kTypeSoa) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RDATA is raw bytes, but ", TypeName(record.type), " is written from its typed value"));
  }
  if (raw.size() > UINT16_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("RDATA is ", raw.size(), " bytes, more than RDLENGTH can say (65535)"));
  }
  writer.Raw(raw);
  return absl::OkStatus();
}

absl::Status WriteRecord(const Record& record, Writer& writer) {
  RETURN_IF_ERROR(Annotate(writer.Name(record.name), absl::StrCat("name ", Quote(record.name))));
  if (record.type == kTypeOpt) {
    return absl::InvalidArgumentError("an OPT record (EDNS is written from Message::edns)");
  }
  writer.U16(record.type);
  writer.U16(record.rclass);
  writer.U32(record.ttl);
  const size_t rdlength_at = writer.size();
  writer.U16(0);
  RETURN_IF_ERROR(WriteRdata(record, writer));
  writer.PutU16At(rdlength_at, static_cast<uint16_t>(writer.size() - rdlength_at - 2));
  return absl::OkStatus();
}

// Text forms of numbers without a name ("TYPE65", RFC 3597 5), built once on first use so that
// TypeName and RcodeName can return a pointer that stays valid, without building a string per
// call. Each entry takes kStride bytes: a prefix of up to 5 letters, up to 5 digits and the NUL.
class NumberNames {
 public:
  static constexpr size_t kStride = 12;
  NumberNames(std::string_view prefix, size_t count)
      : count_(count), table_(std::make_unique<char[]>(count * kStride)) {
    for (size_t i = 0; i < count; ++i) {
      char* entry = &table_[i * kStride];
      std::memcpy(entry, prefix.data(), prefix.size());
      char digits[5];
      size_t n = 0;
      for (size_t v = i; n == 0 || v != 0; v /= 10) digits[n++] = static_cast<char>('0' + v % 10);
      for (size_t d = 0; d < n; ++d) entry[prefix.size() + d] = digits[n - 1 - d];
      entry[prefix.size() + n] = '\0';
    }
  }
  const char* Get(size_t i) const { return i < count_ ? &table_[i * kStride] : nullptr; }

 private:
  size_t count_;
  std::unique_ptr<char[]> table_;
};

std::optional<uint32_t> ParseReverseOctet(std::string_view label) {
  // Decimal 0..255, without leading zeros other than "0" itself (so that one address has one name).
  if (label.empty() || label.size() > 3) return std::nullopt;
  if (label.size() > 1 && label[0] == '0') return std::nullopt;
  uint32_t value = 0;
  for (char c : label) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > 255) return std::nullopt;
  return value;
}

std::optional<uint8_t> ParseNibble(std::string_view label) {
  if (label.size() != 1) return std::nullopt;
  const char c = FoldAscii(label[0]);
  if (c >= '0' && c <= '9') return static_cast<uint8_t>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<uint8_t>(c - 'a' + 10);
  return std::nullopt;
}

// Splits `name` at its dots; nullopt unless it has exactly `count` labels before `suffix`
// (which is matched case-insensitively).
std::optional<std::vector<std::string_view>> LabelsBefore(std::string_view name,
                                                          std::string_view suffix, size_t count) {
  if (name.size() <= suffix.size() + 1) return std::nullopt;
  const size_t head_size = name.size() - suffix.size() - 1;
  if (name[head_size] != '.' || !EqualsIgnoreAsciiCase(name.substr(head_size + 1), suffix)) {
    return std::nullopt;
  }
  std::vector<std::string_view> labels;
  labels.reserve(count);
  std::string_view head = name.substr(0, head_size);
  for (;;) {
    const size_t dot = head.find('.');
    labels.push_back(head.substr(0, dot));
    if (labels.size() > count) return std::nullopt;
    if (dot == std::string_view::npos) break;
    head.remove_prefix(dot + 1);
  }
  if (labels.size() != count) return std::nullopt;
  return labels;
}

}  // namespace

// ---- Names ------------------------------------------------------------------------------------

bool NameEquals(std::string_view a, std::string_view b) {
  // Escapes are canonical ("\." and "\\" only), so equal labels have equal text.
  return EqualsIgnoreAsciiCase(a, b);
}

bool NameInZone(std::string_view name, std::string_view zone) {
  if (zone.empty()) return true;  // Every name is under the root.
  if (name.size() == zone.size()) return EqualsIgnoreAsciiCase(name, zone);
  if (name.size() < zone.size() + 2) return false;  // At least one byte of label, and the dot.
  const size_t dot = name.size() - zone.size() - 1;
  if (name[dot] != '.' || !EqualsIgnoreAsciiCase(name.substr(dot + 1), zone)) return false;
  // The dot separates labels only if it is not escaped, that is if an even number of
  // backslashes stands before it ("a\.mesh" is one label, not a name in "mesh").
  size_t backslashes = 0;
  while (backslashes < dot && name[dot - 1 - backslashes] == '\\') ++backslashes;
  return backslashes % 2 == 0;
}

std::string CanonicalName(std::string_view name) {
  std::string out(name);
  for (char& c : out) c = FoldAscii(c);
  return out;
}

bool IsDnsLabel(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return s.front() != '-' && s.back() != '-';
}

// ---- Messages ---------------------------------------------------------------------------------

absl::StatusOr<Message> Decode(absl::Span<const uint8_t> bytes, uint16_t* id_out) {
  ByteReader reader(bytes);
  Message message;
  Header& header = message.header;
  if (!reader.ReadBe16(&header.id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("header: cut short (", bytes.size(), " of 12 bytes)"));
  }
  if (id_out != nullptr) *id_out = header.id;

  // RFC 1035 4.1.1, with AD and CD from RFC 4035 3.2; the remaining Z bit is ignored.
  uint16_t flags, qdcount, ancount, nscount, arcount;
  if (!reader.ReadBe16(&flags) || !reader.ReadBe16(&qdcount) || !reader.ReadBe16(&ancount) ||
      !reader.ReadBe16(&nscount) || !reader.ReadBe16(&arcount)) {
    return absl::InvalidArgumentError(
        absl::StrCat("header: cut short (", bytes.size(), " of 12 bytes)"));
  }
  header.qr = flags & 0x8000;
  header.opcode = static_cast<uint8_t>(flags >> 11 & 0xF);
  header.aa = flags & 0x0400;
  header.tc = flags & 0x0200;
  header.rd = flags & 0x0100;
  header.ra = flags & 0x0080;
  header.ad = flags & 0x0020;
  header.cd = flags & 0x0010;
  uint16_t rcode = flags & 0xF;

  // Every entry takes a few bytes at least: counts that the rest cannot hold are rejected here,
  // before anything is reserved, so a header claiming 65535 records costs nothing.
  const size_t records = size_t{ancount} + nscount + arcount;
  const size_t at_least = qdcount * kMinQuestionSize + records * kMinRecordSize;
  if (at_least > reader.remaining()) {
    return absl::InvalidArgumentError(
        absl::StrCat("header: ", qdcount, " questions and ", records, " records need at least ",
                     at_least, " bytes, but ", reader.remaining(), " follow the header"));
  }

  message.questions.reserve(qdcount);
  for (size_t i = 0; i < qdcount; ++i) {
    Question question;
    absl::Status status = Annotate(ReadName(bytes, reader, &question.name), "name");
    if (status.ok() && (!reader.ReadBe16(&question.type) || !reader.ReadBe16(&question.qclass))) {
      status = absl::InvalidArgumentError("cut short in QTYPE or QCLASS");
    }
    if (!status.ok()) return Annotate(status, Place("question", i));
    message.questions.push_back(std::move(question));
  }

  struct Section {
    const char* name;
    uint16_t count;
    std::vector<Record>* records;
  };
  const Section sections[] = {{"answer", ancount, &message.answers},
                              {"authority", nscount, &message.authority},
                              {"additional", arcount, &message.additional}};
  for (const Section& section : sections) {
    section.records->reserve(section.count);
    for (size_t i = 0; i < section.count; ++i) {
      RecordHead head;
      if (absl::Status status = ReadRecordHead(bytes, reader, &head); !status.ok()) {
        return Annotate(status, Place(section.name, i));
      }
      if (head.type == kTypeOpt) {
        // RFC 6891 6.1.1: one OPT record, in the additional section, owned by the root.
        absl::Status status;
        if (section.records != &message.additional) {
          status = absl::InvalidArgumentError("OPT record outside the additional section");
        } else if (message.edns.has_value()) {
          status = absl::InvalidArgumentError("a second OPT record");
        } else if (!head.name.empty()) {
          status = absl::InvalidArgumentError(
              absl::StrCat("OPT record owned by ", Quote(head.name), ", not the root"));
        }
        if (!status.ok()) return Annotate(status, Place(section.name, i));
        // RFC 6891 6.1.3: TTL is EXTENDED-RCODE (8 bits), VERSION (8 bits), DO and Z; the
        // options in RDATA are not kept.
        Edns edns;
        edns.udp_size = head.rclass;
        edns.version = static_cast<uint8_t>(head.ttl >> 16);
        edns.dnssec_ok = head.ttl & 0x8000;
        rcode = static_cast<uint16_t>(rcode | (head.ttl >> 24) << 4);
        message.edns = edns;
        continue;
      }
      Record record;
      record.name = std::move(head.name);
      record.type = head.type;
      record.rclass = head.rclass;
      record.ttl = head.ttl;
      if (absl::Status status = ReadRdata(bytes, head.rdata_start, head.rdlength, record.type,
                                          record.rclass, &record.data);
          !status.ok()) {
        return Annotate(status, Place(section.name, i));
      }
      section.records->push_back(std::move(record));
    }
  }
  header.rcode = static_cast<Rcode>(rcode);
  // Bytes after the last record are ignored, as most resolvers do.
  return message;
}

absl::StatusOr<std::vector<uint8_t>> Encode(const Message& message, size_t max_size) {
  const Header& header = message.header;
  const uint16_t rcode = static_cast<uint16_t>(header.rcode);
  if (header.opcode > 0xF) {
    return absl::InvalidArgumentError(
        absl::StrCat("header: opcode ", header.opcode, " does not fit in 4 bits"));
  }
  if (rcode > kMaxRcode) {
    return absl::InvalidArgumentError(
        absl::StrCat("header: RCODE ", rcode, " does not fit in 12 bits"));
  }
  if (rcode > 0xF && !message.edns.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("header: RCODE ", RcodeName(header.rcode), " (",
                                                   rcode, ") needs EDNS (Message::edns)"));
  }
  max_size = std::min(max_size, kMaxMessageSize);
  const size_t opt_size = message.edns.has_value() ? kOptRecordSize : 0;

  std::vector<uint8_t> out;
  out.reserve(std::min(max_size, kClassicUdpSize));
  Writer writer(&out);
  writer.Raw(std::array<uint8_t, kHeaderSize>{});  // Filled in at the end, with the counts.

  for (size_t i = 0; i < message.questions.size(); ++i) {
    const Question& question = message.questions[i];
    RETURN_IF_ERROR(Annotate(writer.Name(question.name),
                             absl::StrCat(Place("question", i), ": name ", Quote(question.name))));
    writer.U16(question.type);
    writer.U16(question.qclass);
  }
  if (writer.size() + opt_size > max_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the header and ", message.questions.size(), " questions", opt_size ? " and OPT" : "",
        " take ", writer.size() + opt_size, " bytes, more than the limit of ", max_size));
  }

  // Records are written in order until one does not fit (leaving room for the OPT record); that
  // one and all after it are dropped, which is dropping from the end of the additional section,
  // then of the authority and answer sections (RFC 2181 9). The records after the cut are still
  // written once and taken back, so that an invalid one is an error whatever the limit; what
  // they add to the compression table points past the cut, where no kept name can look.
  struct Section {
    const char* name;
    const std::vector<Record>* records;
    uint16_t kept = 0;
  };
  Section sections[] = {{"answer", &message.answers},
                        {"authority", &message.authority},
                        {"additional", &message.additional}};
  bool full = false;
  for (Section& section : sections) {
    for (size_t i = 0; i < section.records->size(); ++i) {
      const size_t start = writer.size();
      RETURN_IF_ERROR(Annotate(WriteRecord((*section.records)[i], writer), Place(section.name, i)));
      if (!full && writer.size() + opt_size <= max_size) {
        ++section.kept;
      } else {
        full = true;
        writer.Truncate(start);
      }
    }
  }
  // TC tells the client that the answer is incomplete and to retry over TCP; a shortened
  // additional section does not (RFC 2181 9).
  const bool truncated =
      sections[0].kept < message.answers.size() || sections[1].kept < message.authority.size();

  uint16_t arcount = sections[2].kept;
  if (message.edns.has_value()) {
    const Edns& edns = *message.edns;
    writer.Raw(std::array<uint8_t, 1>{0});  // The root.
    writer.U16(kTypeOpt);
    writer.U16(edns.udp_size);
    writer.U32(static_cast<uint32_t>(rcode >> 4) << 24 | uint32_t{edns.version} << 16 |
               (edns.dnssec_ok ? 0x8000u : 0u));
    writer.U16(0);
    ++arcount;
  }

  const uint16_t flags = static_cast<uint16_t>(
      (header.qr ? 0x8000 : 0) | header.opcode << 11 | (header.aa ? 0x0400 : 0) |
      (header.tc || truncated ? 0x0200 : 0) | (header.rd ? 0x0100 : 0) | (header.ra ? 0x0080 : 0) |
      (header.ad ? 0x0020 : 0) | (header.cd ? 0x0010 : 0) | (rcode & 0xF));
  writer.PutU16At(0, header.id);
  writer.PutU16At(2, flags);
  writer.PutU16At(4, static_cast<uint16_t>(message.questions.size()));
  writer.PutU16At(6, sections[0].kept);
  writer.PutU16At(8, sections[1].kept);
  writer.PutU16At(10, arcount);
  return out;
}

// ---- Reverse names ----------------------------------------------------------------------------

std::string ReverseName(const IpAddress& address) {
  const uint8_t* b = address.bytes();
  if (address.is_v4()) {
    return absl::StrCat(b[3], ".", b[2], ".", b[1], ".", b[0], ".in-addr.arpa");
  }
  // RFC 3596 2.5: one label per nibble, least significant first.
  static constexpr char kHex[] = "0123456789abcdef";
  std::string name;
  name.reserve(32 * 2 + 8);
  for (int i = 15; i >= 0; --i) {
    name.push_back(kHex[b[i] & 0xF]);
    name.push_back('.');
    name.push_back(kHex[b[i] >> 4]);
    name.push_back('.');
  }
  name += "ip6.arpa";
  return name;
}

std::optional<IpAddress> AddressOfReverseName(std::string_view name) {
  if (auto labels = LabelsBefore(name, "in-addr.arpa", 4)) {
    uint8_t bytes[4];
    for (size_t i = 0; i < 4; ++i) {
      const auto octet = ParseReverseOctet((*labels)[3 - i]);
      if (!octet) return std::nullopt;
      bytes[i] = static_cast<uint8_t>(*octet);
    }
    return IpAddress::V4(bytes);
  }
  if (auto labels = LabelsBefore(name, "ip6.arpa", 32)) {
    uint8_t bytes[16] = {};
    for (size_t i = 0; i < 32; ++i) {
      // Label i is nibble 31 - i counted from the most significant one.
      const auto nibble = ParseNibble((*labels)[i]);
      if (!nibble) return std::nullopt;
      const size_t index = 31 - i;
      bytes[index / 2] |= static_cast<uint8_t>(index % 2 == 0 ? *nibble << 4 : *nibble);
    }
    return IpAddress::V6(bytes);
  }
  return std::nullopt;
}

// ---- Text forms -------------------------------------------------------------------------------

const char* RcodeName(Rcode rcode) {
  // RFC 1035 4.1.1, RFC 2136 2.2, RFC 6891 9.
  switch (static_cast<uint16_t>(rcode)) {
    case 0:
      return "NOERROR";
    case 1:
      return "FORMERR";
    case 2:
      return "SERVFAIL";
    case 3:
      return "NXDOMAIN";
    case 4:
      return "NOTIMP";
    case 5:
      return "REFUSED";
    case 6:
      return "YXDOMAIN";
    case 7:
      return "YXRRSET";
    case 8:
      return "NXRRSET";
    case 9:
      return "NOTAUTH";
    case 10:
      return "NOTZONE";
    case 16:
      return "BADVERS";
  }
  static const NumberNames* const names = new NumberNames("RCODE", kMaxRcode + 1);
  const char* name = names->Get(static_cast<uint16_t>(rcode));
  return name != nullptr ? name : "RCODE>4095";
}

const char* TypeName(uint16_t type) {
  switch (type) {
    case kTypeA:
      return "A";
    case kTypeNs:
      return "NS";
    case kTypeCname:
      return "CNAME";
    case kTypeSoa:
      return "SOA";
    case kTypePtr:
      return "PTR";
    case 15:
      return "MX";
    case kTypeTxt:
      return "TXT";
    case kTypeAaaa:
      return "AAAA";
    case 33:
      return "SRV";
    case kTypeOpt:
      return "OPT";
    case kTypeAny:
      return "ANY";
  }
  static const NumberNames* const names = new NumberNames("TYPE", 65536);
  return names->Get(type);
}

}  // namespace tunnelmesh::dns
