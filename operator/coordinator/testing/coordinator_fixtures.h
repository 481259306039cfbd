// Shared by the coordinator's unit tests: a temporary directory, Mesh specs parsed from manifest
// text, register requests and fresh keys.
#pragma once

#include <stdio.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "lib/crypto/keys.h"
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

inline PublicKey NewKey() { return DerivePublicKey(SecretKey::GeneratePrivate()); }

}  // namespace tunnelmesh
