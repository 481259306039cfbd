#include "lib/crypto/x509.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace tunnelmesh {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Bio = std::unique_ptr<BIO, BioFree>;

absl::Status OpenSslError(const std::string& what) {
  return absl::InternalError(what + " failed (OpenSSL)");
}

Pkey NewKey() { return Pkey(EVP_EC_gen("P-256")); }

std::string KeyPem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string CertPem(X509* cert) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

Pkey ParseKey(const std::string& pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return Pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

Cert ParseCert(const std::string& pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return Cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

void AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext != nullptr) {
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
}

Cert MakeCert(EVP_PKEY* key, const char* common_name, X509* issuer, EVP_PKEY* issuer_key,
              bool is_ca, long days) {
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  uint8_t serial[16];
  RAND_bytes(serial, sizeof(serial));
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), days * 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name), -1, -1, 0);
  X509* signer = issuer != nullptr ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  if (is_ca) {
    AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
    AddExtension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
    AddExtension(cert.get(), signer, NID_subject_key_identifier, "hash");
  } else {
    AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    AddExtension(cert.get(), signer, NID_key_usage, "critical,digitalSignature");
    AddExtension(cert.get(), signer, NID_ext_key_usage, "serverAuth");
    const std::string san = std::string("DNS:") + kCoordinatorServerName;
    AddExtension(cert.get(), signer, NID_subject_alt_name, san.c_str());
  }
  X509_sign(cert.get(), issuer_key, EVP_sha256());
  return cert;
}

}  // namespace

absl::StatusOr<std::string> CaCertHash(const std::string& pem) {
  Cert cert = ParseCert(pem);
  if (!cert) return absl::InvalidArgumentError("not a PEM certificate");
  unsigned char* der = nullptr;
  int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert.get()), &der);
  if (len <= 0) return OpenSslError("encoding the public key");
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(der, static_cast<size_t>(len), digest);
  OPENSSL_free(der);
  static const char kHex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned char b : digest) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

absl::Status ValidateCaHash(const std::string& hash) {
  bool ok = hash.size() == 7 + 64 && hash.rfind("sha256:", 0) == 0;
  for (size_t i = 7; ok && i < hash.size(); ++i) {
    ok = (hash[i] >= '0' && hash[i] <= '9') || (hash[i] >= 'a' && hash[i] <= 'f');
  }
  if (!ok) {
    return absl::InvalidArgumentError("--ca-hash \"" + hash +
                                      "\" must be sha256: followed by 64 lowercase hex digits, as "
                                      "tunnelmesh-operator prints it");
  }
  return absl::OkStatus();
}

absl::StatusOr<PemPair> MakeCa() {
  Pkey key = NewKey();
  if (!key) return OpenSslError("generating the CA key");
  Cert ca = MakeCert(key.get(), "tunnelmesh coordinator CA", nullptr, key.get(), true, 3650);
  return PemPair{CertPem(ca.get()), KeyPem(key.get())};
}

absl::StatusOr<PemPair> IssueServerCert(const PemPair& ca) {
  Cert ca_cert = ParseCert(ca.cert_pem);
  Pkey ca_key = ParseKey(ca.key_pem);
  if (!ca_cert || !ca_key)
    return absl::InvalidArgumentError("the CA certificate or key is not PEM");
  Pkey key = NewKey();
  if (!key) return OpenSslError("generating the server key");
  Cert server =
      MakeCert(key.get(), kCoordinatorServerName, ca_cert.get(), ca_key.get(), false, 825);
  return PemPair{CertPem(server.get()), KeyPem(key.get())};
}

}  // namespace tunnelmesh
