// The one bounds-checked byte reader (and its writer) with explicit endianness. Every parser of
// untrusted bytes (lib/wire formats, lib/disco messages, lib/net inner IP headers) goes through
// ByteReader: a read past the end fails (and every later read fails too) instead of touching memory
// outside the buffer. Multi-byte fields are assembled byte by byte, so neither alignment nor the
// host's byte order matters. Neither class allocates; both are cheap enough for the data plane.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/types/span.h"

namespace tunnelmesh {

class ByteReader {
 public:
  explicit ByteReader(absl::Span<const uint8_t> data) : data_(data) {}

  bool ok() const { return ok_; }
  size_t remaining() const { return ok_ ? data_.size() - pos_ : 0; }

  bool ReadU8(uint8_t* out) { return ReadInto(out, 1); }
  bool ReadLe32(uint32_t* out) {
    uint8_t b[4];
    if (!ReadInto(b, 4)) return false;
    *out = uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
    return true;
  }
  bool ReadLe64(uint64_t* out) {
    uint32_t lo, hi;
    if (!ReadLe32(&lo) || !ReadLe32(&hi)) return false;
    *out = uint64_t{hi} << 32 | lo;
    return true;
  }
  bool ReadBe16(uint16_t* out) {
    uint8_t b[2];
    if (!ReadInto(b, 2)) return false;
    *out = static_cast<uint16_t>(b[0] << 8 | b[1]);
    return true;
  }
  bool ReadBe32(uint32_t* out) {
    uint8_t b[4];
    if (!ReadInto(b, 4)) return false;
    *out = uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
    return true;
  }
  template <size_t N>
  bool ReadArray(std::array<uint8_t, N>* out) {
    return ReadInto(out->data(), N);
  }
  // Points `*out` at the next `n` bytes without copying them; `*out` is a view into the buffer
  // given at construction and lives as long as it does.
  bool ReadBytes(size_t n, absl::Span<const uint8_t>* out) {
    if (!ok_ || data_.size() - pos_ < n) return ok_ = false;
    *out = data_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  bool Skip(size_t n) {
    if (!ok_ || data_.size() - pos_ < n) return ok_ = false;
    pos_ += n;
    return true;
  }

 private:
  bool ReadInto(uint8_t* out, size_t n) {
    if (!ok_ || data_.size() - pos_ < n) return ok_ = false;
    std::memcpy(out, data_.data() + pos_, n);
    pos_ += n;
    return true;
  }

  absl::Span<const uint8_t> data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Writes into a caller-sized buffer; the caller guarantees capacity (the formats written with it
// are fixed-size or sized before writing), so it does not check.
class ByteWriter {
 public:
  explicit ByteWriter(uint8_t* out) : out_(out) {}
  void U8(uint8_t v) { out_[pos_++] = v; }
  void Le32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_[pos_++] = static_cast<uint8_t>(v >> (8 * i));
  }
  void Le64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_[pos_++] = static_cast<uint8_t>(v >> (8 * i));
  }
  void Be16(uint16_t v) {
    out_[pos_++] = static_cast<uint8_t>(v >> 8);
    out_[pos_++] = static_cast<uint8_t>(v);
  }
  void Be32(uint32_t v) {
    for (int i = 3; i >= 0; --i) out_[pos_++] = static_cast<uint8_t>(v >> (8 * i));
  }
  void Raw(const uint8_t* data, size_t n) {
    std::memcpy(out_ + pos_, data, n);
    pos_ += n;
  }
  template <size_t N>
  void Array(const std::array<uint8_t, N>& a) {
    Raw(a.data(), N);
  }
  size_t size() const { return pos_; }

 private:
  uint8_t* out_;
  size_t pos_ = 0;
};

}  // namespace tunnelmesh
