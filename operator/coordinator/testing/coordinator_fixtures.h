// Shared by the coordinator's unit tests: a temporary directory, Mesh specs parsed from manifest
// text, register requests and fresh keys.
#pragma once

#include <stdio.h>
#include <stdlib.h>

#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "lib/crypto/control_proofs.h"
#include "lib/crypto/keys.h"
#include "operator/coordinator/coordinator.h"
#include "operator/coordinator/manifests.h"
#include "proto/coordinator.pb.h"

namespace tunnelmesh {

inline constexpr char kTestJoinToken[] = "a long random string for tests";

inline std::string TempDir() {
  char tmpl[] = "/tmp/tm-coord-XXXXXX";
  return mkdtemp(tmpl);
}

// Mesh "demo": 10.99.0.0/`v4_prefix` and fd99:99::/48, join token kTestJoinToken.
inline std::string MeshManifest(int v4_prefix = 30) {
  return "apiVersion: tunnelmesh.io/v1alpha1\nkind: Mesh\nmetadata: {name: demo}\nspec:\n"
         "  ipv4CIDR: 10.99.0.0/" +
         std::to_string(v4_prefix) +
         "\n"
         "  ipv6CIDR: fd99:99::/48\n"
         "  joinTokenSecretRef: {namespace: tunnelmesh, name: demo-join, key: token}\n---\n"
         "apiVersion: v1\nkind: Secret\nmetadata: {namespace: tunnelmesh, name: demo-join}\n"
         "stringData: {token: \"" +
         std::string(kTestJoinToken) + "\"}\n";
}

inline std::vector<MeshSpec> Meshes(const std::string& text = MeshManifest()) {
  std::string dir = TempDir();
  FILE* f = fopen((dir + "/mesh.yaml").c_str(), "w");
  fputs(text.c_str(), f);
  fclose(f);
  auto meshes = LoadManifests(dir);
  EXPECT_TRUE(meshes.ok()) << meshes.status();
  return meshes.ok() ? *meshes : std::vector<MeshSpec>{};
}

inline coordinator::v1::RegisterRequest Request(const PublicKey& key, const std::string& name,
                                                const std::string& token = kTestJoinToken) {
  coordinator::v1::RegisterRequest r;
  r.set_join_token(token);
  r.set_public_key(std::string(reinterpret_cast<const char*>(key.bytes.data()), 32));
  r.set_name(name);
  return r;
}

// The private keys of the keys NewKey made, so that registrations can prove possession.
class TestKeys {
 public:
  static PublicKey New() {
    SecretKey key = SecretKey::GeneratePrivate();
    const PublicKey public_key = DerivePublicKey(key);
    absl::MutexLock lock(&mu());
    keys().emplace(public_key, std::move(key));
    return public_key;
  }
  // Null for a key New did not make.
  static const SecretKey* Find(const PublicKey& key) {
    absl::MutexLock lock(&mu());
    auto it = keys().find(key);
    return it == keys().end() ? nullptr : &it->second;  // Entries are never erased.
  }

 private:
  static absl::Mutex& mu() {
    static absl::Mutex* m = new absl::Mutex();
    return *m;
  }
  static std::map<PublicKey, SecretKey>& keys() {
    static auto* k = new std::map<PublicKey, SecretKey>();
    return *k;
  }
};

inline PublicKey NewKey() { return TestKeys::New(); }

// Fills in the challenge of a Hello answer and the proof of possession made with NewKey's private
// key (a key NewKey did not make gets a wrong proof).
inline void Prove(coordinator::v1::RegisterRequest* request,
                  const coordinator::v1::HelloResponse& hello) {
  PublicKey member;
  if (request->public_key().size() == kKeySize) {
    std::memcpy(member.bytes.data(), request->public_key().data(), kKeySize);
  }
  PublicKey ephemeral;
  if (hello.ephemeral_public_key().size() == kKeySize) {
    std::memcpy(ephemeral.bytes.data(), hello.ephemeral_public_key().data(), kKeySize);
  }
  const SecretKey* key = TestKeys::Find(member);
  const SecretKey stranger = SecretKey::GeneratePrivate();
  std::optional<ControlProof> proof = PossessionProof(key != nullptr ? *key : stranger, ephemeral,
                                                      hello.challenge(), request->mesh());
  request->set_challenge(hello.challenge());
  if (proof) request->set_possession_proof(std::string(proof->begin(), proof->end()));
}

// Registers the way an agent does: a Hello challenge, then the request with its proof.
inline absl::StatusOr<coordinator::v1::RegisterResponse> RegisterAs(
    Coordinator& c, coordinator::v1::RegisterRequest request,
    const std::string& source = "192.0.2.1") {
  coordinator::v1::HelloRequest hello;
  hello.set_nonce(std::string(16, 'n'));
  absl::StatusOr<coordinator::v1::HelloResponse> challenge = c.Hello(hello, source);
  if (!challenge.ok()) return challenge.status();
  Prove(&request, *challenge);
  return c.Register(request, source);
}

}  // namespace tunnelmesh
