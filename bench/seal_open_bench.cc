// Per-packet cost of the data path's cryptography, with libsodium's ChaCha20-Poly1305 as the
// baseline measured in the same run: raw AEAD seal/open on MTU-sized packets, and the whole
// Device path (SealInPlace: routing state, counter, padding, header, seal; Receive: index lookup,
// open, replay window, timers). Run: build/bin/seal_open_bench; results go to docs/benchmarks.md.
#include <sodium.h>

#include <vector>

#include "benchmark/benchmark.h"
#include "lib/crypto/aead.h"
#include "lib/noise/device.h"

namespace tunnelmesh {
namespace {

void BM_SealProject(benchmark::State& state) {
  const size_t size = state.range(0);
  uint8_t key[32] = {1};
  std::vector<uint8_t> buf(size + 16, 7);
  uint64_t counter = 0;
  for (auto _ : state) {
    AeadSeal(key, counter++, absl::Span<const uint8_t>(buf.data(), size), {}, buf.data());
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetBytesProcessed(state.iterations() * size);
}
BENCHMARK(BM_SealProject)->Arg(64)->Arg(1420);

void BM_SealLibsodiumBaseline(benchmark::State& state) {
  const size_t size = state.range(0);
  uint8_t key[32] = {1};
  uint8_t nonce[12] = {};
  std::vector<uint8_t> buf(size + 16, 7);
  unsigned long long len = 0;
  for (auto _ : state) {
    crypto_aead_chacha20poly1305_ietf_encrypt(buf.data(), &len, buf.data(), size, nullptr, 0,
                                              nullptr, nonce, key);
    ++nonce[4];
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetBytesProcessed(state.iterations() * size);
}
BENCHMARK(BM_SealLibsodiumBaseline)->Arg(64)->Arg(1420);

void BM_OpenProject(benchmark::State& state) {
  const size_t size = state.range(0);
  uint8_t key[32] = {1};
  std::vector<uint8_t> sealed(size + 16, 7), out(size + 16);
  AeadSeal(key, 5, absl::Span<const uint8_t>(sealed.data(), size), {}, sealed.data());
  for (auto _ : state) {
    bool ok = AeadOpen(key, 5, sealed, {}, out.data());
    benchmark::DoNotOptimize(ok);
  }
  state.SetBytesProcessed(state.iterations() * size);
}
BENCHMARK(BM_OpenProject)->Arg(64)->Arg(1420);

// Two devices with an established session; measures one SealInPlace + Receive round per packet.
void BM_DeviceSealAndReceive(benchmark::State& state) {
  InitCrypto();
  const size_t size = state.range(0);
  SecretKey ka = SecretKey::GeneratePrivate(), kb = SecretKey::GeneratePrivate();
  noise::Device a(ka, 1420), b(kb, 1420);
  Endpoint ea(*IpAddress::Parse("192.0.2.1"), 1), eb(*IpAddress::Parse("192.0.2.2"), 2);
  noise::Peer* pa = *a.AddPeer({b.identity().public_key, SecretKey(), eb, std::chrono::seconds(0)});
  (void)*b.AddPeer({a.identity().public_key, SecretKey(), ea, std::chrono::seconds(0)});
  MonoTime now = MonoClock::now();
  std::vector<std::vector<uint8_t>> to_b, to_a;
  auto from_a = [&](const TransportEndpoint&, absl::Span<const uint8_t> m) {
    to_b.emplace_back(m.begin(), m.end());
  };
  auto from_b = [&](const TransportEndpoint&, absl::Span<const uint8_t> m) {
    to_a.emplace_back(m.begin(), m.end());
  };
  a.Initiate(pa, now, absl::Now(), from_a);
  for (auto& m : to_b) b.Receive(absl::Span<uint8_t>(m), ea, now, absl::Now(), from_b);
  for (auto& m : to_a) a.Receive(absl::Span<uint8_t>(m), eb, now, absl::Now(), from_a);
  std::vector<uint8_t> buffer(16 + size + noise::Device::kSealTailroom, 0);
  buffer[16] = 0x45;
  buffer[18] = static_cast<uint8_t>(size >> 8);
  buffer[19] = static_cast<uint8_t>(size);
  std::vector<uint8_t> packet(buffer.begin() + 16, buffer.begin() + 16 + size);
  auto ignore = [](const TransportEndpoint&, absl::Span<const uint8_t>) {};
  for (auto _ : state) {
    std::copy(packet.begin(), packet.end(), buffer.begin() + 16);
    size_t length = 0;
    TransportEndpoint to;
    a.SealInPlace(pa, buffer.data(), size, now, absl::Time(), ignore, &length, &to);
    auto r = b.Receive(absl::Span<uint8_t>(buffer.data(), length), ea, now, absl::Time(), ignore);
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(state.iterations() * size);
}
BENCHMARK(BM_DeviceSealAndReceive)->Arg(64)->Arg(1420);

}  // namespace
}  // namespace tunnelmesh

BENCHMARK_MAIN();
