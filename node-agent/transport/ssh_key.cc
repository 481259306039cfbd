#include "node-agent/transport/ssh_key.h"

#include <libssh/libssh.h>
#include <sodium.h>

#include <cstring>
#include <string>
#include <vector>

#include "lib/crypto/blake2s.h"

namespace tunnelmesh {
namespace {

constexpr char kEd25519[] = "ssh-ed25519";

void PutU32(std::vector<uint8_t>* out, uint32_t v) {
  out->push_back(static_cast<uint8_t>(v >> 24));
  out->push_back(static_cast<uint8_t>(v >> 16));
  out->push_back(static_cast<uint8_t>(v >> 8));
  out->push_back(static_cast<uint8_t>(v));
}

// An SSH "string": a 32-bit big-endian length, then the bytes (RFC 4251 section 5).
void PutString(std::vector<uint8_t>* out, const uint8_t* data, size_t size) {
  PutU32(out, static_cast<uint32_t>(size));
  out->insert(out->end(), data, data + size);
}
void PutString(std::vector<uint8_t>* out, const char* text) {
  PutString(out, reinterpret_cast<const uint8_t*>(text), std::strlen(text));
}

// The public key blob: string "ssh-ed25519", string key (RFC 8709 section 4).
std::vector<uint8_t> PublicBlob(const PublicKey& key) {
  std::vector<uint8_t> blob;
  PutString(&blob, kEd25519);
  PutString(&blob, key.bytes.data(), key.bytes.size());
  return blob;
}

}  // namespace

SshIdentity DeriveSshIdentity(const SecretKey& node_private_key) {
  InitCrypto();
  SshIdentity identity;
  HmacBlake2s(absl::Span<const uint8_t>(node_private_key.data(), kKeySize),
              {absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(kSshKeyLabel),
                                         sizeof(kSshKeyLabel) - 1)},
              identity.seed.mutable_data());
  uint8_t secret[crypto_sign_SECRETKEYBYTES];
  crypto_sign_seed_keypair(identity.public_key.bytes.data(), secret, identity.seed.data());
  sodium_memzero(secret, sizeof(secret));
  return identity;
}

void SshKeyDeleter::operator()(ssh_key_struct* key) const { ssh_key_free(key); }

absl::StatusOr<SshKeyPtr> ImportSshPrivateKey(const SshIdentity& identity) {
  // libssh 0.10 imports raw Ed25519 keys only from the OpenSSH private key format, so this builds
  // one in memory (unencrypted "openssh-key-v1", as in OpenSSH's PROTOCOL.key) and wipes it.
  std::vector<uint8_t> priv;
  PutU32(&priv, 0x746d7368);  // Two equal check words.
  PutU32(&priv, 0x746d7368);
  PutString(&priv, kEd25519);
  PutString(&priv, identity.public_key.bytes.data(), kKeySize);
  PutU32(&priv, 64);  // The secret: seed || public key.
  priv.insert(priv.end(), identity.seed.data(), identity.seed.data() + kKeySize);
  priv.insert(priv.end(), identity.public_key.bytes.begin(), identity.public_key.bytes.end());
  PutString(&priv, "");  // Comment.
  for (uint8_t pad = 1; priv.size() % 8 != 0; ++pad) priv.push_back(pad);

  std::vector<uint8_t> file;
  const char magic[] = "openssh-key-v1";
  file.insert(file.end(), magic, magic + sizeof(magic));  // With its NUL.
  PutString(&file, "none");
  PutString(&file, "none");
  PutString(&file, "");
  PutU32(&file, 1);
  const std::vector<uint8_t> blob = PublicBlob(identity.public_key);
  PutString(&file, blob.data(), blob.size());
  PutString(&file, priv.data(), priv.size());
  sodium_memzero(priv.data(), priv.size());

  std::string text(sodium_base64_ENCODED_LEN(file.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(text.data(), text.size(), file.data(), file.size(),
                    sodium_base64_VARIANT_ORIGINAL);
  sodium_memzero(file.data(), file.size());
  text.resize(std::strlen(text.c_str()));
  std::string pem = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
  for (size_t i = 0; i < text.size(); i += 70) pem += text.substr(i, 70) + "\n";
  pem += "-----END OPENSSH PRIVATE KEY-----\n";
  sodium_memzero(text.data(), text.size());

  ssh_key key = nullptr;
  const int rc = ssh_pki_import_privkey_base64(pem.c_str(), nullptr, nullptr, nullptr, &key);
  sodium_memzero(pem.data(), pem.size());
  if (rc != SSH_OK || key == nullptr) {
    return absl::InternalError("libssh refused the derived Ed25519 SSH key (libssh too old?)");
  }
  return SshKeyPtr(key);
}

absl::StatusOr<SshKeyPtr> ImportSshPublicKey(const PublicKey& ed25519) {
  // libssh's public API takes the blob in base64 (as in authorized_keys).
  const std::vector<uint8_t> blob = PublicBlob(ed25519);
  std::string text(sodium_base64_ENCODED_LEN(blob.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(text.data(), text.size(), blob.data(), blob.size(),
                    sodium_base64_VARIANT_ORIGINAL);
  ssh_key key = nullptr;
  const int rc = ssh_pki_import_pubkey_base64(text.c_str(), SSH_KEYTYPE_ED25519, &key);
  if (rc != SSH_OK || key == nullptr) {
    return absl::InvalidArgumentError("not an Ed25519 public key");
  }
  return SshKeyPtr(key);
}

bool ExportEd25519(ssh_key_struct* key, PublicKey* out) {
  if (key == nullptr || ssh_key_type(key) != SSH_KEYTYPE_ED25519) return false;
  char* text = nullptr;
  if (ssh_pki_export_pubkey_base64(key, &text) != SSH_OK || text == nullptr) return false;
  // string "ssh-ed25519" (4 + 11 bytes), string key (4 + 32 bytes).
  uint8_t blob[4 + sizeof(kEd25519) - 1 + 4 + kKeySize + 1];
  size_t size = 0;
  const bool decoded = sodium_base642bin(blob, sizeof(blob), text, std::strlen(text), nullptr,
                                         &size, nullptr, sodium_base64_VARIANT_ORIGINAL) == 0;
  ssh_string_free_char(text);
  const bool ok = decoded && size == sizeof(blob) - 1;
  if (ok) std::memcpy(out->bytes.data(), blob + size - kKeySize, kKeySize);
  return ok;
}

}  // namespace tunnelmesh
