// The Noise_IKpsk2 handshake exactly as WireGuard specifies it (whitepaper section 5.4.2-5.4.5):
// building and consuming initiation and response messages, and deriving the transport keys.
// Pure functions over explicit state: no I/O, no clocks (the caller passes the wall time for the
// TAI64N timestamp), no locking. MACs (mac1/mac2) are added and checked by cookie.h.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/time/time.h"
#include "lib/crypto/keys.h"
#include "lib/crypto/tai64n.h"
#include "lib/wire/wireguard.h"

namespace tunnelmesh::noise {

// This host's long-term identity with the values derived from it once.
struct StaticIdentity {
  SecretKey private_key;
  PublicKey public_key;
  // HASH(LABEL_MAC1 || our public key): checks mac1 of messages sent to us.
  uint8_t mac1_key[32] = {};
  // HASH(LABEL_COOKIE || our public key): encrypts cookie replies we send.
  uint8_t cookie_key[32] = {};

  static StaticIdentity FromPrivateKey(const SecretKey& private_key);
};

// What we know of a peer before any handshake: its static key and the values derived from it once.
// (The preshared key is not among them: it can change during a peer's life, see PresharedKeys.)
struct PeerStatics {
  PublicKey public_key;
  SecretKey static_static;  // DH(our static private, peer static public).
  bool static_static_valid = false;
  uint8_t mac1_key[32] = {};    // HASH(LABEL_MAC1 || peer public key): mac1 of messages to them.
  uint8_t cookie_key[32] = {};  // HASH(LABEL_COOKIE || peer public key): opens their cookies.

  static PeerStatics Make(const StaticIdentity& local, const PublicKey& peer);
};

// The preshared keys of a peer's handshakes (all zero when none is configured, as the protocol
// defines). IKpsk2 mixes the key in only where the responder builds its response and where the
// initiator consumes it, so a key can be rolled over without a flag day: a responder always uses
// `primary`; an initiator tries `primary` and, when that fails the response's AEAD check, also
// `secondary` (present only during a rollover). Trying the second key costs one KDF and one AEAD
// open, no Diffie-Hellman and no round trip.
struct PresharedKeys {
  SecretKey primary;
  std::optional<SecretKey> secondary = std::nullopt;

  PresharedKeys Clone() const;
};

// An initiator's state between sending an initiation and consuming the response.
struct InitiatorState {
  SecretKey ephemeral_private;
  SecretKey chaining_key;
  uint8_t hash[32] = {};
  uint32_t local_index = 0;
};

// Transport keys of a completed handshake.
struct SessionKeys {
  SecretKey send;
  SecretKey receive;
};

// Builds an initiation to `peer` (macs left zero). Returns false when a Diffie-Hellman result is
// zero (the peer's key is a low-order point), in which case no message may be sent.
[[nodiscard]] bool CreateInitiation(const StaticIdentity& local, const PeerStatics& peer,
                                    uint32_t local_index, absl::Time wall_now,
                                    InitiatorState* state, wire::HandshakeInitiation* out);

// What a responder learns from a valid initiation, before it knows whether the sender is a peer.
struct ConsumedInitiation {
  PublicKey initiator_static;
  PublicKey initiator_ephemeral;
  Tai64n timestamp{};
  uint32_t sender_index = 0;
  SecretKey chaining_key;
  uint8_t hash[32] = {};
};

// Decrypts an initiation sent to `local`. Returns false when it does not authenticate. The caller
// must then check that the static key belongs to a peer, that the timestamp is newer than the
// last one accepted from that peer, and that `static_static` matches before responding.
[[nodiscard]] bool ConsumeInitiation(const StaticIdentity& local,
                                     const wire::HandshakeInitiation& message,
                                     ConsumedInitiation* out);

// Builds the response to a consumed initiation with `preshared_key` and derives the responder's
// transport keys.
[[nodiscard]] bool CreateResponse(const ConsumedInitiation& initiation,
                                  const SecretKey& preshared_key, uint32_t local_index,
                                  wire::HandshakeResponse* out, SessionKeys* keys);

// Which of the PresharedKeys a consumed response was made with.
enum class PresharedKeyUsed { kNone, kPrimary, kSecondary };

// Consumes a response to our initiation and derives the initiator's transport keys. Returns kNone
// when it authenticates with neither preshared key.
[[nodiscard]] PresharedKeyUsed ConsumeResponse(const StaticIdentity& local,
                                               const PresharedKeys& preshared_keys,
                                               const InitiatorState& state,
                                               const wire::HandshakeResponse& message,
                                               SessionKeys* keys);

}  // namespace tunnelmesh::noise
