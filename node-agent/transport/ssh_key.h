// The SSH identity of a member, derived from its node (WireGuard) private key so that nothing new
// has to be stored or distributed: seed = HMAC-BLAKE2s(node private key, kSshKeyLabel), and the
// Ed25519 key pair of that seed (RFC 8032). The Ed25519 key is the member's SSH host key and the
// key it logs in to peers with; its public half travels in RegisterRequest.ssh_public_key and
// Peer.ssh_public_key. Knowing the public SSH key reveals nothing of the node key (HMAC is
// one-way).
//
// Also the glue between these raw 32-byte keys and libssh's ssh_key objects.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "lib/crypto/keys.h"

struct ssh_key_struct;

namespace tunnelmesh {

// The label mixed into the derivation; changing it changes every member's SSH key.
inline constexpr char kSshKeyLabel[] = "tunnelmesh ssh ed25519 v1";

struct SshIdentity {
  SecretKey seed;        // The Ed25519 private seed (secret).
  PublicKey public_key;  // The Ed25519 public key.
};

SshIdentity DeriveSshIdentity(const SecretKey& node_private_key);

struct SshKeyDeleter {
  void operator()(ssh_key_struct* key) const;
};
using SshKeyPtr = std::unique_ptr<ssh_key_struct, SshKeyDeleter>;

// The libssh private key of `identity` (for ssh_bind and ssh_userauth_publickey).
[[nodiscard]] absl::StatusOr<SshKeyPtr> ImportSshPrivateKey(const SshIdentity& identity);
// The libssh public key of a raw Ed25519 public key.
[[nodiscard]] absl::StatusOr<SshKeyPtr> ImportSshPublicKey(const PublicKey& ed25519);
// The raw Ed25519 public key of a libssh key; false for any other key type.
[[nodiscard]] bool ExportEd25519(ssh_key_struct* key, PublicKey* out);

}  // namespace tunnelmesh
