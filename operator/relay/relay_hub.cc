#include "operator/relay/relay_hub.h"

#include <sodium.h>

#include <utility>

#include "lib/base/log.h"

namespace tunnelmesh {

namespace relay = wire::relay;

namespace {

// True when `hello.proof` is the box of the challenge's random bytes from the named client key
// to our key, under the challenge's nonce.
bool ProofHolds(const relay::Challenge& challenge, const SecretKey& server_private_key,
                const relay::Hello& hello) {
  uint8_t opened[relay::kRandomSize];
  if (crypto_box_open_easy(opened, hello.proof.data(), hello.proof.size(), challenge.nonce.data(),
                           hello.client_key.data(), server_private_key.data()) != 0) {
    return false;
  }
  return sodium_memcmp(opened, challenge.random.data(), relay::kRandomSize) == 0;
}

}  // namespace

RelayHub::RelayHub(const SecretKey& server_private_key, MembershipCheck is_member,
                   RandomSource random)
    : private_key_(server_private_key.Clone()),
      public_key_(DerivePublicKey(server_private_key)),
      is_member_(std::move(is_member)),
      random_(std::move(random)) {
  if (!random_) random_ = [](uint8_t* out, size_t size) { randombytes_buf(out, size); };
}

void RelayHub::Opened(RelayConnection* connection) {
  counters_.connections.fetch_add(1, std::memory_order_relaxed);
  ConnectionState& state = connections_[connection];
  state.challenge.server_key = public_key_.bytes;
  random_(state.challenge.nonce.data(), state.challenge.nonce.size());
  random_(state.challenge.random.data(), state.challenge.random.size());
  std::vector<uint8_t> frame;
  relay::Serialize(state.challenge, &frame);
  connection->Send(std::move(frame), /*droppable=*/false);
}

void RelayHub::Received(RelayConnection* connection, std::vector<uint8_t> frame) {
  auto it = connections_.find(connection);
  if (it == connections_.end() || it->second.closing) return;
  ConnectionState& state = it->second;
  if (!state.authenticated) {
    HandleHello(connection, state, frame);
    return;
  }
  HandleSend(state, std::move(frame));
}

void RelayHub::ReceivedOversized(RelayConnection* connection) {
  auto it = connections_.find(connection);
  if (it == connections_.end() || it->second.closing) return;
  counters_.oversized.fetch_add(1, std::memory_order_relaxed);
  if (!it->second.authenticated) {
    Refuse(connection, it->second, relay::ErrorCode::kProtocol, "expected a Hello frame");
  }
}

void RelayHub::ReceivedText(RelayConnection* connection) {
  auto it = connections_.find(connection);
  if (it == connections_.end() || it->second.closing) return;
  counters_.malformed.fetch_add(1, std::memory_order_relaxed);
  if (!it->second.authenticated) {
    Refuse(connection, it->second, relay::ErrorCode::kProtocol, "expected a binary Hello frame");
  }
}

void RelayHub::AuthDeadline(RelayConnection* connection) {
  auto it = connections_.find(connection);
  if (it == connections_.end() || it->second.closing || it->second.authenticated) return;
  Refuse(connection, it->second, relay::ErrorCode::kAuthTimeout, "no valid Hello in time");
}

void RelayHub::Closed(RelayConnection* connection) {
  auto it = connections_.find(connection);
  if (it == connections_.end()) return;
  if (it->second.authenticated) {
    counters_.sessions.fetch_sub(1, std::memory_order_relaxed);
    auto route = routes_.find(it->second.key);
    if (route != routes_.end() && route->second == connection) routes_.erase(route);
    TM_LOG_DEBUG("relay session closed key={}", it->second.key.Short());
  }
  connections_.erase(it);
}

void RelayHub::BadUpgrade() { counters_.bad_upgrades.fetch_add(1, std::memory_order_relaxed); }

void RelayHub::Revoke(const PublicKey& key) {
  auto route = routes_.find(key);
  if (route == routes_.end()) return;
  RelayConnection* connection = route->second;
  routes_.erase(route);
  auto state = connections_.find(connection);
  if (state == connections_.end() || state->second.closing) return;
  TM_LOG_INFO("relay session revoked: no longer a member key={}", key.Short());
  CloseWithError(connection, state->second, relay::ErrorCode::kNotMember,
                 "key is no longer a member of this mesh");
}

void RelayHub::HandleHello(RelayConnection* connection, ConnectionState& state,
                           const std::vector<uint8_t>& frame) {
  relay::Hello hello;
  if (!relay::Parse(relay::Bytes(frame.data(), frame.size()), &hello)) {
    counters_.malformed.fetch_add(1, std::memory_order_relaxed);
    Refuse(connection, state, relay::ErrorCode::kProtocol, "expected a Hello frame");
    return;
  }
  if (!ProofHolds(state.challenge, private_key_, hello)) {
    Refuse(connection, state, relay::ErrorCode::kAuthFailed,
           "the Hello proof does not match its key");
    return;
  }
  PublicKey key{hello.client_key};
  if (!is_member_(key)) {
    TM_LOG_DEBUG("relay refused a key that is not a member key={}", key.Short());
    Refuse(connection, state, relay::ErrorCode::kNotMember, "key is not a member of this mesh");
    return;
  }
  state.authenticated = true;
  state.key = key;
  counters_.sessions.fetch_add(1, std::memory_order_relaxed);
  RelayConnection*& route = routes_[key];
  if (route != nullptr && route != connection) {
    // The newest connection wins: the older one is usually a dead TCP connection from before the
    // member's address changed. Telling it why stops a healthy duplicate from retrying in a loop.
    auto older = connections_.find(route);
    if (older != connections_.end()) {
      TM_LOG_INFO("relay key connected again, closing its older connection key={}", key.Short());
      CloseWithError(route, older->second, relay::ErrorCode::kReplaced,
                     "a newer connection uses this key");
    }
  }
  route = connection;
  std::vector<uint8_t> ready;
  relay::SerializeReady(&ready);
  connection->Send(std::move(ready), /*droppable=*/false);
  TM_LOG_DEBUG("relay session open key={}", key.Short());
}

void RelayHub::HandleSend(const ConnectionState& state, std::vector<uint8_t> frame) {
  relay::Send send;
  if (!relay::Parse(relay::Bytes(frame.data(), frame.size()), &send)) {
    counters_.malformed.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  auto route = routes_.find(PublicKey{send.destination});
  if (route == routes_.end()) {
    counters_.unknown_destination.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const size_t payload_size = send.payload.size();
  // Parse succeeded, so the rewrite does too.
  if (!relay::RewriteSendAsDeliver(absl::MakeSpan(frame), state.key.bytes)) return;
  if (!route->second->Send(std::move(frame), /*droppable=*/true)) {
    counters_.queue_overflow.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  counters_.frames_relayed.fetch_add(1, std::memory_order_relaxed);
  counters_.bytes_relayed.fetch_add(payload_size, std::memory_order_relaxed);
}

void RelayHub::Refuse(RelayConnection* connection, ConnectionState& state, relay::ErrorCode code,
                      std::string_view text) {
  counters_.auth_failures.fetch_add(1, std::memory_order_relaxed);
  CloseWithError(connection, state, code, text);
}

void RelayHub::CloseWithError(RelayConnection* connection, ConnectionState& state,
                              relay::ErrorCode code, std::string_view text) {
  state.closing = true;
  std::vector<uint8_t> frame;
  relay::Serialize(relay::Error{code, text}, &frame);
  connection->Send(std::move(frame), /*droppable=*/false);
  connection->Close();
}

}  // namespace tunnelmesh
