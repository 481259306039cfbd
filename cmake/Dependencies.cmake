# Every third-party dependency comes from Debian packages (see scripts/install-deps.sh).
find_package(PkgConfig REQUIRED)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)
pkg_check_modules(LIBNL REQUIRED IMPORTED_TARGET libnl-3.0 libnl-route-3.0)
# The agent's SSH path (node-agent/transport/ssh_transport.cc): Debian's libssh-dev, 0.10 or later.
pkg_check_modules(LIBSSH REQUIRED IMPORTED_TARGET libssh>=0.10)
find_package(OpenSSL 3 REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(Threads REQUIRED)
find_package(GTest REQUIRED)
if(TM_BENCH)
  find_package(benchmark REQUIRED)
endif()

# Control plane: gRPC and protobuf (CMake's own FindProtobuf: Debian ships no protobuf config),
# YAML manifests, cpprestsdk (WebSocket client), Boost.Beast (WebSocket server).
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(yaml-cpp CONFIG REQUIRED)
find_package(cpprestsdk CONFIG REQUIRED)
find_package(Boost REQUIRED)
