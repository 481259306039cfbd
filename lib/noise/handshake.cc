#include "lib/noise/handshake.h"

#include <sodium.h>

#include <cstring>

#include "lib/crypto/aead.h"
#include "lib/crypto/blake2s.h"
#include "lib/noise/constants.h"

namespace tunnelmesh::noise {
namespace {

Bytes Str(const char* s) { return Bytes(reinterpret_cast<const uint8_t*>(s), std::strlen(s)); }
template <size_t N>
Bytes B(const std::array<uint8_t, N>& a) {
  return Bytes(a.data(), N);
}
Bytes B32(const uint8_t* p) { return Bytes(p, 32); }

// The initial chaining key and hash, the same for every handshake: C = HASH(CONSTRUCTION),
// H = HASH(C || IDENTIFIER). Computed once.
struct InitialState {
  uint8_t chaining_key[32];
  uint8_t hash[32];
  InitialState() {
    Blake2s({Str(kConstruction)}, chaining_key);
    Blake2s({B32(chaining_key), Str(kIdentifier)}, hash);
  }
};
const InitialState& Initial() {
  static const InitialState state;
  return state;
}

// H = HASH(H || data)
void MixHash(uint8_t hash[32], Bytes data) { Blake2s({B32(hash), data}, hash); }

// C = KDF1(C, DH(private, public)); false when the DH result is zero (a low-order point).
bool MixDh(uint8_t* ck, const SecretKey& private_key, const PublicKey& public_key) {
  SecretKey dh;
  if (!X25519(private_key, public_key, &dh)) return false;
  Kdf(ck, B32(dh.data()), {ck});
  return true;
}

// (C, tau, key) = KDF3(C, psk); H = HASH(H || tau). The last step both sides of a response share.
void MixPresharedKey(uint8_t* ck, uint8_t h[32], const SecretKey& psk, SecretKey* key) {
  uint8_t tau[32];
  Kdf(ck, B32(psk.data()), {ck, tau, key->mutable_data()});
  MixHash(h, B32(tau));
  sodium_memzero(tau, sizeof(tau));
}

void Derive(const uint8_t label_source[32], const char* label, uint8_t out[32]) {
  Blake2s({Str(label), B32(label_source)}, out);
}

}  // namespace

StaticIdentity StaticIdentity::FromPrivateKey(const SecretKey& private_key) {
  StaticIdentity id;
  id.private_key = private_key.Clone();
  id.public_key = DerivePublicKey(private_key);
  Derive(id.public_key.bytes.data(), kLabelMac1, id.mac1_key);
  Derive(id.public_key.bytes.data(), kLabelCookie, id.cookie_key);
  return id;
}

PeerStatics PeerStatics::Make(const StaticIdentity& local, const PublicKey& peer) {
  PeerStatics s;
  s.public_key = peer;
  s.static_static_valid = X25519(local.private_key, peer, &s.static_static);
  Derive(peer.bytes.data(), kLabelMac1, s.mac1_key);
  Derive(peer.bytes.data(), kLabelCookie, s.cookie_key);
  return s;
}

PresharedKeys PresharedKeys::Clone() const {
  PresharedKeys out;
  out.primary = primary.Clone();
  if (secondary) out.secondary = secondary->Clone();
  return out;
}

bool CreateInitiation(const StaticIdentity& local, const PeerStatics& peer, uint32_t local_index,
                      absl::Time wall_now, InitiatorState* state, wire::HandshakeInitiation* out) {
  if (!peer.static_static_valid) return false;
  uint8_t* ck = state->chaining_key.mutable_data();
  uint8_t* h = state->hash;
  std::memcpy(ck, Initial().chaining_key, 32);
  std::memcpy(h, Initial().hash, 32);
  MixHash(h, B(peer.public_key.bytes));

  state->ephemeral_private = SecretKey::GeneratePrivate();
  state->local_index = local_index;
  PublicKey ephemeral = DerivePublicKey(state->ephemeral_private);
  out->sender_index = local_index;
  out->unencrypted_ephemeral = ephemeral.bytes;
  Kdf(ck, B(ephemeral.bytes), {ck});
  MixHash(h, B(ephemeral.bytes));

  SecretKey dh, key;
  if (!X25519(state->ephemeral_private, peer.public_key, &dh)) return false;
  Kdf(ck, B32(dh.data()), {ck, key.mutable_data()});
  AeadSeal(key.data(), 0, B(local.public_key.bytes), B32(h), out->encrypted_static.data());
  MixHash(h, B(out->encrypted_static));

  Kdf(ck, B32(peer.static_static.data()), {ck, key.mutable_data()});
  Tai64n timestamp = EncodeTai64n(wall_now);
  AeadSeal(key.data(), 0, B(timestamp), B32(h), out->encrypted_timestamp.data());
  MixHash(h, B(out->encrypted_timestamp));
  out->mac1.fill(0);
  out->mac2.fill(0);
  return true;
}

bool ConsumeInitiation(const StaticIdentity& local, const wire::HandshakeInitiation& message,
                       ConsumedInitiation* out) {
  uint8_t* ck = out->chaining_key.mutable_data();
  uint8_t* h = out->hash;
  std::memcpy(ck, Initial().chaining_key, 32);
  std::memcpy(h, Initial().hash, 32);
  MixHash(h, B(local.public_key.bytes));

  out->initiator_ephemeral.bytes = message.unencrypted_ephemeral;
  Kdf(ck, B(message.unencrypted_ephemeral), {ck});
  MixHash(h, B(message.unencrypted_ephemeral));

  SecretKey dh, key;
  if (!X25519(local.private_key, out->initiator_ephemeral, &dh)) return false;
  Kdf(ck, B32(dh.data()), {ck, key.mutable_data()});
  if (!AeadOpen(key.data(), 0, B(message.encrypted_static), B32(h),
                out->initiator_static.bytes.data())) {
    return false;
  }
  MixHash(h, B(message.encrypted_static));

  if (!X25519(local.private_key, out->initiator_static, &dh)) return false;
  Kdf(ck, B32(dh.data()), {ck, key.mutable_data()});
  if (!AeadOpen(key.data(), 0, B(message.encrypted_timestamp), B32(h), out->timestamp.data())) {
    return false;
  }
  MixHash(h, B(message.encrypted_timestamp));
  out->sender_index = message.sender_index;
  return true;
}

bool CreateResponse(const ConsumedInitiation& initiation, const SecretKey& preshared_key,
                    uint32_t local_index, wire::HandshakeResponse* out, SessionKeys* keys) {
  SecretKey chaining = initiation.chaining_key.Clone();
  uint8_t* ck = chaining.mutable_data();
  uint8_t h[32];
  std::memcpy(h, initiation.hash, 32);

  SecretKey ephemeral_private = SecretKey::GeneratePrivate();
  PublicKey ephemeral = DerivePublicKey(ephemeral_private);
  out->sender_index = local_index;
  out->receiver_index = initiation.sender_index;
  out->unencrypted_ephemeral = ephemeral.bytes;
  Kdf(ck, B(ephemeral.bytes), {ck});
  MixHash(h, B(ephemeral.bytes));

  if (!MixDh(ck, ephemeral_private, initiation.initiator_ephemeral) ||
      !MixDh(ck, ephemeral_private, initiation.initiator_static)) {
    return false;
  }
  SecretKey key;
  MixPresharedKey(ck, h, preshared_key, &key);
  AeadSeal(key.data(), 0, Bytes(), B32(h), out->encrypted_nothing.data());
  out->mac1.fill(0);
  out->mac2.fill(0);
  // Responder: (T_recv, T_send) = KDF2(C, empty).
  Kdf(ck, Bytes(), {keys->receive.mutable_data(), keys->send.mutable_data()});
  sodium_memzero(h, sizeof(h));
  return true;
}

PresharedKeyUsed ConsumeResponse(const StaticIdentity& local, const PresharedKeys& preshared_keys,
                                 const InitiatorState& state,
                                 const wire::HandshakeResponse& message, SessionKeys* keys) {
  if (message.receiver_index != state.local_index) return PresharedKeyUsed::kNone;
  SecretKey chaining = state.chaining_key.Clone();
  uint8_t* ck = chaining.mutable_data();
  uint8_t h[32];
  std::memcpy(h, state.hash, 32);

  PublicKey ephemeral;
  ephemeral.bytes = message.unencrypted_ephemeral;
  Kdf(ck, B(ephemeral.bytes), {ck});
  MixHash(h, B(ephemeral.bytes));

  if (!MixDh(ck, state.ephemeral_private, ephemeral) || !MixDh(ck, local.private_key, ephemeral)) {
    return PresharedKeyUsed::kNone;
  }
  // Everything before the preshared key is shared by both tries; each try works on copies.
  const SecretKey* candidates[] = {&preshared_keys.primary,
                                   preshared_keys.secondary ? &*preshared_keys.secondary : nullptr};
  for (size_t i = 0; i < 2; ++i) {
    if (candidates[i] == nullptr) continue;
    SecretKey try_chaining = chaining.Clone();
    uint8_t* try_ck = try_chaining.mutable_data();
    uint8_t try_h[32];
    std::memcpy(try_h, h, 32);
    SecretKey key;
    MixPresharedKey(try_ck, try_h, *candidates[i], &key);
    const bool opened = AeadOpen(key.data(), 0, B(message.encrypted_nothing), B32(try_h), nullptr);
    sodium_memzero(try_h, sizeof(try_h));
    if (!opened) continue;
    // Initiator: (T_send, T_recv) = KDF2(C, empty).
    Kdf(try_ck, Bytes(), {keys->send.mutable_data(), keys->receive.mutable_data()});
    sodium_memzero(h, sizeof(h));
    return i == 0 ? PresharedKeyUsed::kPrimary : PresharedKeyUsed::kSecondary;
  }
  sodium_memzero(h, sizeof(h));
  return PresharedKeyUsed::kNone;
}

}  // namespace tunnelmesh::noise
