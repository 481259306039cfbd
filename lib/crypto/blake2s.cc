#include "lib/crypto/blake2s.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <sodium.h>

#include <cstdlib>
#include <cstring>

namespace tunnelmesh {
namespace {

constexpr size_t kBlockSize = 64;

const EVP_MD* Blake2sMd() {
  static const EVP_MD* md = [] {
    EVP_MD* fetched = EVP_MD_fetch(nullptr, "BLAKE2S-256", nullptr);
    if (fetched == nullptr)
      std::abort();  // OpenSSL 3 always has it; missing means a broken install.
    return fetched;
  }();
  return md;
}

EVP_MAC* Blake2sMacAlgorithm() {
  static EVP_MAC* mac = [] {
    EVP_MAC* fetched = EVP_MAC_fetch(nullptr, "BLAKE2SMAC", nullptr);
    if (fetched == nullptr) std::abort();
    return fetched;
  }();
  return mac;
}

// One reusable digest context per thread: handshakes run on several threads.
EVP_MD_CTX* ThreadDigestContext() {
  thread_local struct Holder {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~Holder() { EVP_MD_CTX_free(ctx); }
  } holder;
  return holder.ctx;
}

}  // namespace

void Blake2s(std::initializer_list<Bytes> parts, uint8_t out[kHashSize]) {
  EVP_MD_CTX* ctx = ThreadDigestContext();
  EVP_DigestInit_ex(ctx, Blake2sMd(), nullptr);
  for (Bytes part : parts) EVP_DigestUpdate(ctx, part.data(), part.size());
  unsigned int len = kHashSize;
  EVP_DigestFinal_ex(ctx, out, &len);
}

void Blake2sMac(Bytes key, Bytes data, uint8_t out[kMacSize]) {
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(Blake2sMacAlgorithm());
  size_t size = kMacSize;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
                         OSSL_PARAM_construct_end()};
  size_t written = 0;
  if (ctx == nullptr || EVP_MAC_init(ctx, key.data(), key.size(), params) != 1 ||
      EVP_MAC_update(ctx, data.data(), data.size()) != 1 ||
      EVP_MAC_final(ctx, out, &written, kMacSize) != 1 || written != kMacSize) {
    std::abort();  // Only reachable with invalid key sizes, which callers never pass.
  }
  EVP_MAC_CTX_free(ctx);
}

void HmacBlake2s(Bytes key, std::initializer_list<Bytes> data, uint8_t out[kHashSize]) {
  uint8_t block[kBlockSize] = {};
  if (key.size() > kBlockSize) {
    Blake2s({key}, block);
  } else {
    std::memcpy(block, key.data(), key.size());
  }
  uint8_t pad[kBlockSize];
  for (size_t i = 0; i < kBlockSize; ++i) pad[i] = block[i] ^ 0x36;
  EVP_MD_CTX* ctx = ThreadDigestContext();
  uint8_t inner[kHashSize];
  unsigned int len = kHashSize;
  EVP_DigestInit_ex(ctx, Blake2sMd(), nullptr);
  EVP_DigestUpdate(ctx, pad, kBlockSize);
  for (Bytes part : data) EVP_DigestUpdate(ctx, part.data(), part.size());
  EVP_DigestFinal_ex(ctx, inner, &len);
  for (size_t i = 0; i < kBlockSize; ++i) pad[i] = block[i] ^ 0x5c;
  EVP_DigestInit_ex(ctx, Blake2sMd(), nullptr);
  EVP_DigestUpdate(ctx, pad, kBlockSize);
  EVP_DigestUpdate(ctx, inner, kHashSize);
  EVP_DigestFinal_ex(ctx, out, &len);
  sodium_memzero(block, sizeof(block));
  sodium_memzero(pad, sizeof(pad));
  sodium_memzero(inner, sizeof(inner));
}

void Kdf(const uint8_t key[kHashSize], Bytes input, std::initializer_list<uint8_t*> outputs) {
  uint8_t tau0[kHashSize];
  uint8_t previous[kHashSize + 1];
  HmacBlake2s(Bytes(key, kHashSize), {input}, tau0);
  uint8_t index = 1;
  size_t previous_len = 0;
  for (uint8_t* out : outputs) {
    previous[previous_len] = index;
    uint8_t next[kHashSize];
    HmacBlake2s(Bytes(tau0, kHashSize), {Bytes(previous, previous_len + 1)}, next);
    std::memcpy(previous, next, kHashSize);
    previous_len = kHashSize;
    std::memcpy(out, next, kHashSize);
    sodium_memzero(next, sizeof(next));
    ++index;
  }
  sodium_memzero(tau0, sizeof(tau0));
  sodium_memzero(previous, sizeof(previous));
}

}  // namespace tunnelmesh
