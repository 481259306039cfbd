#include "operator/relay/relay_hub.h"

#include <sodium.h>

#include <algorithm>
#include <utility>

#include "lib/base/log.h"
#include "lib/disco/message.h"
#include "lib/wire/wireguard.h"

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

// What agents relay: a WireGuard message (types 1-4, reserved bytes zero, the size its type
// allows) or a discovery message (the magic, and a size a sealed message can have). Anything else
// is not ours to carry: the relay is no general-purpose tunnel between members.
bool IsRelayablePayload(relay::Bytes payload) {
  if (wire::Classify(payload).has_value()) return true;
  return disco::IsDiscoMessage(payload) && payload.size() >= disco::kMinDatagramSize &&
         payload.size() <= disco::kMaxDatagramSize;
}

}  // namespace

RelayHub::RelayHub(const SecretKey& server_private_key, MembershipCheck is_member,
                   RandomSource random, Limits limits, const Clock* clock)
    : private_key_(server_private_key.Clone()),
      public_key_(DerivePublicKey(server_private_key)),
      is_member_(std::move(is_member)),
      random_(std::move(random)),
      limits_(limits),
      // A bucket must hold at least one frame, or a low rate would refuse every frame.
      frame_capacity_(std::max(
          1.0, limits.frames_per_second * std::chrono::duration<double>(limits.burst).count())),
      byte_capacity_(
          std::max(static_cast<double>(relay::kMaxPayloadSize),
                   limits.bytes_per_second * std::chrono::duration<double>(limits.burst).count())),
      clock_(clock != nullptr ? clock : &system_clock_) {
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

void RelayHub::ConnectionRefused(ConnectionCap cap) {
  switch (cap) {
    case ConnectionCap::kTotal:
      counters_.refused_total_cap.fetch_add(1, std::memory_order_relaxed);
      return;
    case ConnectionCap::kPerSource:
      counters_.refused_source_cap.fetch_add(1, std::memory_order_relaxed);
      return;
    case ConnectionCap::kPending:
      counters_.refused_pending_cap.fetch_add(1, std::memory_order_relaxed);
      return;
  }
}

void RelayHub::PlaintextRefused() {
  counters_.plaintext_refused.fetch_add(1, std::memory_order_relaxed);
}

void RelayHub::TlsFailed() { counters_.tls_failures.fetch_add(1, std::memory_order_relaxed); }

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

void RelayHub::Rescope(const PublicKey& key) {
  auto route = routes_.find(key);
  if (route == routes_.end()) return;
  auto state = connections_.find(route->second);
  if (state == connections_.end() || state->second.closing) return;
  std::optional<std::string> mesh = is_member_(key);
  if (!mesh.has_value()) {
    Revoke(key);
    return;
  }
  if (*mesh == state->second.mesh) return;
  TM_LOG_INFO("relay session moved to its member's new mesh key={} from={} to={}", key.Short(),
              state->second.mesh, *mesh);
  state->second.mesh = *std::move(mesh);
  counters_.rescoped.fetch_add(1, std::memory_order_relaxed);
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
  std::optional<std::string> mesh = is_member_(key);
  if (!mesh.has_value()) {
    TM_LOG_DEBUG("relay refused a key that is not a member key={}", key.Short());
    Refuse(connection, state, relay::ErrorCode::kNotMember, "key is not a member of this mesh");
    return;
  }
  state.authenticated = true;
  state.key = key;
  state.mesh = *std::move(mesh);
  // Full buckets: a member that just connected may send a burst at once.
  const MonoTime now = clock_->Now();
  state.frames = Bucket{frame_capacity_, now};
  state.bytes = Bucket{byte_capacity_, now};
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
  connection->Authenticated();
  TM_LOG_DEBUG("relay session open key={} mesh={}", key.Short(), state.mesh);
}

bool RelayHub::Take(Bucket& bucket, double rate, double capacity, double cost, MonoTime now) {
  if (now > bucket.last) {
    bucket.tokens = std::min(
        capacity, bucket.tokens + rate * std::chrono::duration<double>(now - bucket.last).count());
    bucket.last = now;
  }
  if (bucket.tokens < cost) return false;
  bucket.tokens -= cost;
  return true;
}

void RelayHub::HandleSend(ConnectionState& state, std::vector<uint8_t> frame) {
  relay::Send send;
  if (!relay::Parse(relay::Bytes(frame.data(), frame.size()), &send)) {
    counters_.malformed.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const size_t payload_size = send.payload.size();
  // The rate counts every well-formed Send, delivered or not: it bounds what one session costs
  // the relay's thread, whatever it sends.
  const MonoTime now = clock_->Now();
  if (!Take(state.frames, limits_.frames_per_second, frame_capacity_, 1, now) ||
      !Take(state.bytes, limits_.bytes_per_second, byte_capacity_,
            static_cast<double>(payload_size), now)) {
    counters_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (!IsRelayablePayload(send.payload)) {
    counters_.bad_payload.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  auto route = routes_.find(PublicKey{send.destination});
  if (route == routes_.end()) {
    counters_.unknown_destination.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  auto destination = connections_.find(route->second);
  if (destination == connections_.end() || destination->second.mesh != state.mesh) {
    // Another mesh's member: as far as this sender is concerned it is not here.
    counters_.cross_mesh.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // Parse succeeded, so the rewrite does too.
  if (!relay::RewriteSendAsDeliver(absl::MakeSpan(frame), state.key.bytes)) return;
  switch (route->second->Send(std::move(frame), /*droppable=*/true)) {
    case SendResult::kQueued:
      break;
    case SendResult::kQueueFull:
      counters_.queue_overflow.fetch_add(1, std::memory_order_relaxed);
      return;
    case SendResult::kOverBudget:
      counters_.budget_overflow.fetch_add(1, std::memory_order_relaxed);
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
