// Runs a libFuzzer-style target (LLVMFuzzerTestOneInput) without libFuzzer: seeded random inputs
// and mutations of earlier inputs, for a bounded number of iterations, so every build exercises
// each parser of untrusted input under the same sanitizers as the rest of its tests: the test
// command's asan leg (scripts/ci/leg.sh) runs every fuzz target built with ASan and UBSan. With
// -DTM_LIBFUZZER=ON the same target links real libFuzzer instead (coverage-guided).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  long iterations = 100000;
  uint32_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--iterations=", 0) == 0) {
      iterations = std::strtol(arg.c_str() + 13, nullptr, 10);
    } else if (arg.rfind("--seed=", 0) == 0) {
      seed = static_cast<uint32_t>(std::strtoul(arg.c_str() + 7, nullptr, 10));
    } else {
      std::fprintf(stderr, "usage: %s [--iterations=N] [--seed=N]\n", argv[0]);
      return 2;
    }
  }
  std::mt19937 rng(seed);
  std::vector<std::vector<uint8_t>> pool;
  std::vector<uint8_t> input;
  for (long i = 0; i < iterations; ++i) {
    if (!pool.empty() && rng() % 2 == 0) {
      input = pool[rng() % pool.size()];
      int edits = 1 + rng() % 4;
      for (int e = 0; e < edits; ++e) {
        switch (rng() % 4) {
          case 0:
            if (!input.empty())
              input[rng() % input.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
            break;
          case 1:
            if (!input.empty()) input.resize(rng() % input.size());
            break;
          case 2:
            input.push_back(static_cast<uint8_t>(rng()));
            break;
          default:
            if (!input.empty()) input[rng() % input.size()] = static_cast<uint8_t>(rng());
        }
      }
    } else {
      // Small first bytes bias toward the type and length fields that parsers branch on.
      size_t size = rng() % 2 ? rng() % 64 : rng() % 2048;
      input.resize(size);
      for (auto& b : input) b = static_cast<uint8_t>(rng() % 4 == 0 ? rng() % 8 : rng());
    }
    LLVMFuzzerTestOneInput(input.data(), input.size());
    if (pool.size() < 256) {
      pool.push_back(input);
    } else {
      pool[rng() % pool.size()] = input;
    }
  }
  std::printf("ran %ld inputs\n", iterations);
  return 0;
}
