#include "lib/crypto/control_proofs.h"

#include <sodium.h>

#include <initializer_list>

#include "lib/crypto/blake2s.h"

namespace tunnelmesh {
namespace {

constexpr std::string_view kPossessionLabel = "tunnelmesh register proof v1";
constexpr std::string_view kTokenLabel = "tunnelmesh coordinator token proof v1";

Bytes AsBytes(std::string_view s) {
  return Bytes(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// label || (len16 || field)...; fields longer than 65535 bytes are cut there, which only the
// caller's own size checks can reach.
std::string Context(std::string_view label, std::initializer_list<std::string_view> fields) {
  std::string out(label);
  for (std::string_view field : fields) {
    const size_t size = field.size() > 0xffff ? 0xffff : field.size();
    out += static_cast<char>(size >> 8);
    out += static_cast<char>(size & 0xff);
    out.append(field.substr(0, size));
  }
  return out;
}

bool SameProof(const ControlProof& expected, std::string_view proof) {
  return proof.size() == expected.size() &&
         sodium_memcmp(expected.data(), proof.data(), expected.size()) == 0;
}

std::string_view KeyView(const PublicKey& key) {
  return std::string_view(reinterpret_cast<const char*>(key.bytes.data()), key.bytes.size());
}

std::optional<ControlProof> Possession(const SecretKey& private_key, const PublicKey& peer,
                                       const PublicKey& member, std::string_view challenge,
                                       std::string_view mesh) {
  SecretKey shared;
  if (!X25519(private_key, peer, &shared)) return std::nullopt;
  const std::string context = Context(kPossessionLabel, {challenge, KeyView(member), mesh});
  ControlProof proof;
  HmacBlake2s(Bytes(shared.data(), kKeySize), {AsBytes(context)}, proof.data());
  return proof;
}

}  // namespace

std::optional<ControlProof> PossessionProof(const SecretKey& member_private,
                                            const PublicKey& coordinator_ephemeral,
                                            std::string_view challenge, std::string_view mesh) {
  return Possession(member_private, coordinator_ephemeral, DerivePublicKey(member_private),
                    challenge, mesh);
}

bool CheckPossessionProof(const SecretKey& coordinator_ephemeral_private,
                          const PublicKey& member_public, std::string_view challenge,
                          std::string_view mesh, std::string_view proof) {
  std::optional<ControlProof> expected =
      Possession(coordinator_ephemeral_private, member_public, member_public, challenge, mesh);
  return expected && SameProof(*expected, proof);
}

ControlProof TokenProof(std::string_view join_token, std::string_view nonce,
                        std::string_view ca_hash) {
  uint8_t key[kHashSize];
  Blake2s({AsBytes(join_token)}, key);
  const std::string context = Context(kTokenLabel, {nonce, ca_hash});
  ControlProof proof;
  HmacBlake2s(Bytes(key, sizeof(key)), {AsBytes(context)}, proof.data());
  sodium_memzero(key, sizeof(key));
  return proof;
}

bool CheckTokenProof(std::string_view join_token, std::string_view nonce, std::string_view ca_hash,
                     std::string_view proof) {
  return SameProof(TokenProof(join_token, nonce, ca_hash), proof);
}

}  // namespace tunnelmesh
