// The two proofs that make registration trustworthy (docs/protocol.md, "Registration"):
//
// - Possession: a member proves that it holds the private key of the public key it registers.
//   The coordinator's Hello gives a fresh challenge and an ephemeral X25519 public key; the member
//   answers HMAC-BLAKE2s(X25519(member private, coordinator ephemeral), context), where the
//   context binds the challenge, the member's public key and the mesh it names. Only the holder of
//   the member's private key (or of the coordinator's ephemeral one) can compute it.
// - The coordinator knows the join token: before an agent that has not verified the coordinator's
//   CA sends the token, the coordinator answers the agent's random nonce with
//   HMAC-BLAKE2s(BLAKE2s(token), context), where the context binds the nonce and the hash of the
//   CA the agent saw in the TLS handshake. An impostor without the token cannot compute it,
//   and one that relays the question to the real coordinator gets a proof for the real CA, which
//   does not match the impostor's (as kubeadm's token-signed cluster-info works).
//
// Every variable-length field enters the MAC with a 2-byte length prefix, so no two contexts
// serialize alike. Pure functions; thread-safe.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "lib/crypto/keys.h"

namespace tunnelmesh {

using ControlProof = std::array<uint8_t, 32>;

// The member's answer to a Hello challenge; nullopt when the key agreement gives zero (a low-order
// coordinator key: refuse it).
std::optional<ControlProof> PossessionProof(const SecretKey& member_private,
                                            const PublicKey& coordinator_ephemeral,
                                            std::string_view challenge, std::string_view mesh);

// The coordinator's check of a possession proof (constant time).
bool CheckPossessionProof(const SecretKey& coordinator_ephemeral_private,
                          const PublicKey& member_public, std::string_view challenge,
                          std::string_view mesh, std::string_view proof);

// The coordinator's proof that it knows `join_token`, for the agent's `nonce` and the CA hash
// ("sha256:...") it saw.
ControlProof TokenProof(std::string_view join_token, std::string_view nonce,
                        std::string_view ca_hash);

// The agent's check of a token proof (constant time).
bool CheckTokenProof(std::string_view join_token, std::string_view nonce, std::string_view ca_hash,
                     std::string_view proof);

}  // namespace tunnelmesh
