// The Device's state machine (device.h): peers, handshakes, data, cookies and timers in one file,
// because they share Peer::mu_'s locking discipline and read best in whitepaper order. Slightly
// over 600 lines for that reason; split by protocol step if it grows further.
#include "lib/noise/device.h"

#include <cstring>

#include "lib/crypto/aead.h"
#include "lib/net/packet.h"
#include "lib/noise/constants.h"
#include "lib/wire/wireguard.h"

namespace tunnelmesh::noise {
namespace {

using wire::kTransportHeaderSize;

// Our encoding of a sender for cookies: the 16 address bytes (IPv4 in the first 4) and the port.
// A relayed (or SSH) sender is named by its peer id in the first 4 bytes and port 0, which no UDP
// sender has, so the two never share a cookie.
std::array<uint8_t, 18> SourceId(const TransportEndpoint& from) {
  std::array<uint8_t, 18> id{};
  if (!from.is_udp()) {
    const uint32_t peer_id = from.relay_peer_id();
    id[0] = static_cast<uint8_t>(peer_id >> 24);
    id[1] = static_cast<uint8_t>(peer_id >> 16);
    id[2] = static_cast<uint8_t>(peer_id >> 8);
    id[3] = static_cast<uint8_t>(peer_id);
    return id;
  }
  const Endpoint& udp = from.udp();
  std::memcpy(id.data(), udp.address().bytes(), udp.address().byte_length());
  id[16] = static_cast<uint8_t>(udp.port() >> 8);
  id[17] = static_cast<uint8_t>(udp.port());
  return id;
}

// A scratch buffer per thread for messages the device builds itself (keepalives, staged packets).
uint8_t* Scratch() {
  thread_local std::vector<uint8_t> buffer(kTransportHeaderSize + 65536 + Device::kSealTailroom);
  return buffer.data();
}

}  // namespace

size_t Device::SealTransport(const Keypair& keypair, uint64_t counter, uint8_t* buffer,
                             size_t packet_length) const {
  const size_t padded = wire::PaddedLength(packet_length, mtu_);
  uint8_t* payload = buffer + kTransportHeaderSize;
  std::memset(payload + packet_length, 0, padded - packet_length);
  wire::SerializeTransportHeader({keypair.remote_index, counter}, buffer);
  AeadSeal(keypair.send_key.data(), counter, absl::Span<const uint8_t>(payload, padded), {},
           payload);
  return kTransportHeaderSize + padded + wire::kTagSize;
}

uint32_t IndexTable::Allocate(Peer* peer) {
  absl::MutexLock lock(&mu_);
  for (;;) {
    uint32_t index = 0;
    RandomBytes(absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(&index), sizeof(index)));
    if (entries_.try_emplace(index, Entry{peer, nullptr}).second) return index;
  }
}

void IndexTable::SetKeypair(uint32_t index, std::shared_ptr<Keypair> keypair) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(index);
  if (it != entries_.end()) it->second.keypair = std::move(keypair);
}

void IndexTable::Remove(uint32_t index) {
  absl::MutexLock lock(&mu_);
  entries_.erase(index);
}

std::optional<IndexTable::Entry> IndexTable::Lookup(uint32_t index) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = entries_.find(index);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

size_t IndexTable::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return entries_.size();
}

Peer::Peer(const StaticIdentity& local, PeerConfig config, uint32_t id, IndexTable* indices)
    : id_(id),
      indices_(indices),
      statics_(PeerStatics::Make(local, config.public_key)),
      preshared_keys_{std::move(config.preshared_key), std::move(config.secondary_preshared_key)},
      persistent_keepalive_(config.persistent_keepalive),
      roaming_(config.roaming),
      endpoint_(config.endpoint) {}

std::chrono::seconds Peer::persistent_keepalive() const {
  absl::ReaderMutexLock lock(&mu_);
  return persistent_keepalive_;
}

Peer::~Peer() {
  absl::MutexLock lock(&mu_);
  ZeroAllKeys();
}

std::optional<TransportEndpoint> Peer::endpoint() const {
  absl::ReaderMutexLock lock(&mu_);
  return endpoint_;
}

void Peer::set_endpoint(const TransportEndpoint& endpoint) {
  absl::MutexLock lock(&mu_);
  endpoint_ = endpoint;
}

void Peer::DropKeypair(std::shared_ptr<Keypair>& slot) {
  if (slot) {
    indices_->Remove(slot->local_index);
    slot.reset();
  }
}

void Peer::InstallKeypair(std::shared_ptr<Keypair> keypair) {
  if (keypair->initiator) {
    // Our own handshake completed: the new session is confirmed and becomes current at once.
    if (next_) {
      DropKeypair(previous_);
      previous_ = std::move(next_);
      next_.reset();
      DropKeypair(current_);
    } else {
      DropKeypair(previous_);
      previous_ = std::move(current_);
    }
    current_ = std::move(keypair);
  } else {
    // As responder we may not send on the session until the initiator's first packet confirms it.
    DropKeypair(next_);
    next_ = std::move(keypair);
    DropKeypair(previous_);
  }
}

bool Peer::ConfirmKeypair(const Keypair* keypair) {
  if (!next_ || next_.get() != keypair) return false;
  DropKeypair(previous_);
  previous_ = std::move(current_);
  current_ = std::move(next_);
  next_.reset();
  return true;
}

void Peer::ClearHandshake() {
  if (initiation_pending_) indices_->Remove(initiator_.local_index);
  initiation_pending_ = false;
  handshake_wanted_ = false;
  initiator_ = InitiatorState();
}

void Peer::ZeroAllKeys() {
  DropKeypair(previous_);
  DropKeypair(current_);
  DropKeypair(next_);
  ClearHandshake();
}

std::shared_ptr<Keypair> Peer::SendKeypair(MonoTime now) const {
  if (!current_ || current_->Expired(now) ||
      current_->send_counter.load(std::memory_order_relaxed) >= kRejectAfterMessages) {
    return nullptr;
  }
  return current_;
}

Device::Device(const SecretKey& private_key, size_t mtu, uint32_t handshakes_per_second_under_load)
    : identity_(StaticIdentity::FromPrivateKey(private_key)),
      mtu_(mtu),
      load_threshold_(handshakes_per_second_under_load),
      cookie_checker_(identity_) {}

Device::~Device() {
  absl::MutexLock lock(&peers_mu_);
  peers_.clear();
}

absl::StatusOr<Peer*> Device::AddPeer(PeerConfig config) {
  if (config.public_key == identity_.public_key) {
    return absl::InvalidArgumentError("a peer's public key equals this interface's own public key");
  }
  absl::MutexLock lock(&peers_mu_);
  if (by_key_.contains(config.public_key)) {
    return absl::AlreadyExistsError("peer " + config.public_key.Short() + " is configured twice");
  }
  auto peer = std::make_unique<Peer>(identity_, std::move(config), next_peer_id_++, &indices_);
  Peer* raw = peer.get();
  by_key_[raw->public_key()] = raw;
  peers_.push_back(std::move(peer));
  return raw;
}

bool Device::SetPresharedKeys(const PublicKey& key, PresharedKeys keys) {
  absl::ReaderMutexLock lock(&peers_mu_);
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return false;
  absl::MutexLock peer_lock(&it->second->mu_);
  it->second->preshared_keys_ = std::move(keys);
  return true;
}

std::optional<SecretKey> Device::PresharedKey(const PublicKey& key) const {
  absl::ReaderMutexLock lock(&peers_mu_);
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return std::nullopt;
  absl::ReaderMutexLock peer_lock(&it->second->mu_);
  return it->second->preshared_keys_.primary.Clone();
}

bool Device::SetPersistentKeepalive(const PublicKey& key, std::chrono::seconds interval) {
  absl::ReaderMutexLock lock(&peers_mu_);
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return false;
  absl::MutexLock peer_lock(&it->second->mu_);
  it->second->persistent_keepalive_ = interval;
  it->second->traversed_ever_ = false;
  return true;
}

Peer* Device::FindPeer(const PublicKey& key) const {
  absl::ReaderMutexLock lock(&peers_mu_);
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : it->second;
}

void Device::RemovePeer(const PublicKey& key, MonoTime now) {
  absl::MutexLock lock(&peers_mu_);
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return;
  Peer* peer = it->second;
  by_key_.erase(it);
  {
    absl::MutexLock peer_lock(&peer->mu_);
    peer->ZeroAllKeys();
    peer->staged_.clear();
    peer->endpoint_.reset();
  }
  for (auto p = peers_.begin(); p != peers_.end(); ++p) {
    if (p->get() == peer) {
      retired_.emplace_back(now, std::move(*p));
      peers_.erase(p);
      break;
    }
  }
}

void Device::ForEachPeer(absl::FunctionRef<void(Peer&)> fn) const {
  absl::ReaderMutexLock lock(&peers_mu_);
  for (const auto& peer : peers_) fn(*peer);
}

bool Device::UnderLoad(MonoTime now) {
  absl::MutexLock lock(&load_mu_);
  if (now - load_window_start_ >= std::chrono::seconds(1)) {
    under_load_ = load_window_count_ > load_threshold_;
    load_window_start_ = now;
    load_window_count_ = 0;
  }
  ++load_window_count_;
  return under_load_ || load_window_count_ > load_threshold_;
}

bool Device::PassesMacs(absl::Span<uint8_t> datagram, uint32_t sender_index,
                        const TransportEndpoint& from, MonoTime now, Emit emit) {
  const auto source = SourceId(from);
  const CookieChecker::MacState state = cookie_checker_.Check(datagram, source, now);
  if (state == CookieChecker::MacState::kInvalidMac1) {
    drops_.Add(Drop::kMac1Invalid);
    return false;
  }
  if (UnderLoad(now) && state != CookieChecker::MacState::kValidMac1AndCookie) {
    wire::CookieReply reply;
    cookie_checker_.MakeReply(datagram, sender_index, source, now, &reply);
    uint8_t out[wire::kCookieReplySize];
    wire::Serialize(reply, out);
    emit(from, absl::Span<const uint8_t>(out, sizeof(out)));
    outcomes_.Add(Outcome::kCookieSent);
    return false;
  }
  return true;
}

Device::Received Device::Receive(absl::Span<uint8_t> datagram, const TransportEndpoint& from,
                                 MonoTime now, absl::Time wall_now, Emit emit) {
  const std::optional<wire::MessageType> type = wire::Classify(datagram);
  if (!type) {
    drops_.Add(Drop::kMalformed);
    return {};
  }
  switch (*type) {
    case wire::MessageType::kHandshakeInitiation:
      HandleInitiation(datagram, from, now, emit);
      return {};
    case wire::MessageType::kHandshakeResponse:
      HandleResponse(datagram, from, now, wall_now, emit);
      return {};
    case wire::MessageType::kCookieReply:
      HandleCookieReply(datagram, now);
      return {};
    case wire::MessageType::kTransportData:
      return HandleData(datagram, from, now, wall_now, emit);
  }
  return {};
}

void Device::HandleInitiation(absl::Span<uint8_t> datagram, const TransportEndpoint& from,
                              MonoTime now, Emit emit) {
  wire::HandshakeInitiation message;
  if (!wire::Parse(datagram, &message)) {
    drops_.Add(Drop::kMalformed);
    return;
  }
  if (!PassesMacs(datagram, message.sender_index, from, now, emit)) return;
  ConsumedInitiation initiation;
  if (!ConsumeInitiation(identity_, message, &initiation)) {
    drops_.Add(Drop::kHandshakeInvalid);
    return;
  }
  Peer* peer = FindPeer(initiation.initiator_static);
  if (peer == nullptr) {
    drops_.Add(Drop::kUnknownPeer);
    return;
  }
  absl::MutexLock lock(&peer->mu_);
  if (peer->consumed_ever_ && !Tai64nAfter(initiation.timestamp, peer->latest_timestamp_)) {
    drops_.Add(Drop::kHandshakeReplayed);
    return;
  }
  if (peer->consumed_ever_ && now - peer->last_initiation_consumed_ < kMinInitiationInterval) {
    drops_.Add(Drop::kHandshakeFlood);
    return;
  }
  const uint32_t index = indices_.Allocate(peer);
  wire::HandshakeResponse response;
  SessionKeys keys;
  if (!CreateResponse(initiation, peer->preshared_keys_.primary, index, &response, &keys)) {
    indices_.Remove(index);
    drops_.Add(Drop::kHandshakeInvalid);
    return;
  }
  peer->latest_timestamp_ = initiation.timestamp;
  peer->last_initiation_consumed_ = now;
  peer->consumed_ever_ = true;
  auto keypair = std::make_shared<Keypair>(std::move(keys.send), std::move(keys.receive), index,
                                           initiation.sender_index, now, /*is_initiator=*/false);
  indices_.SetKeypair(index, keypair);
  peer->InstallKeypair(std::move(keypair));
  if (peer->roaming_ || !peer->endpoint_) peer->endpoint_ = from;
  peer->zero_keys_deadline_ = now + kZeroKeysAfter;

  uint8_t out[wire::kResponseSize];
  wire::Serialize(response, out);
  peer->cookies_.AddMacs(absl::Span<uint8_t>(out, sizeof(out)), peer->statics_, now);
  // The response goes back where the initiation came from, whatever path is configured.
  emit(from, absl::Span<const uint8_t>(out, sizeof(out)));
  OnAuthenticatedSend(peer, now, /*is_data=*/false);
}

void Device::HandleResponse(absl::Span<uint8_t> datagram, const TransportEndpoint& from,
                            MonoTime now, absl::Time wall_now, Emit emit) {
  wire::HandshakeResponse message;
  if (!wire::Parse(datagram, &message)) {
    drops_.Add(Drop::kMalformed);
    return;
  }
  if (!PassesMacs(datagram, message.sender_index, from, now, emit)) return;
  const std::optional<IndexTable::Entry> entry = indices_.Lookup(message.receiver_index);
  if (!entry || entry->keypair) {
    drops_.Add(Drop::kUnknownReceiver);
    return;
  }
  Peer* peer = entry->peer;
  absl::MutexLock lock(&peer->mu_);
  SessionKeys keys;
  const PresharedKeyUsed used =
      peer->initiation_pending_ && peer->initiator_.local_index == message.receiver_index
          ? ConsumeResponse(identity_, peer->preshared_keys_, peer->initiator_, message, &keys)
          : PresharedKeyUsed::kNone;
  if (used == PresharedKeyUsed::kNone) {
    drops_.Add(Drop::kHandshakeInvalid);
    peer->stats_.handshake_responses_rejected.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // The responder is a step ahead of (or behind) us in a preshared-key rollover.
  if (used == PresharedKeyUsed::kSecondary) outcomes_.Add(Outcome::kSecondaryPresharedKey);
  const uint32_t index = peer->initiator_.local_index;
  peer->initiation_pending_ = false;
  peer->handshake_wanted_ = false;
  peer->initiator_ = InitiatorState();
  auto keypair = std::make_shared<Keypair>(std::move(keys.send), std::move(keys.receive), index,
                                           message.sender_index, now, /*is_initiator=*/true);
  indices_.SetKeypair(index, keypair);
  peer->InstallKeypair(std::move(keypair));
  if (peer->roaming_ || !peer->endpoint_) peer->endpoint_ = from;
  peer->rekey_on_receive_done_ = false;
  peer->zero_keys_deadline_ = now + kZeroKeysAfter;
  peer->new_handshake_deadline_.reset();
  peer->stats_.handshakes_completed.fetch_add(1, std::memory_order_relaxed);
  peer->stats_.last_handshake_unix_nanos.store(absl::ToUnixNanos(wall_now));
  // The initiator speaks first on a new session, so the responder can confirm it.
  FlushStagedLocked(peer, now, /*keepalive_if_empty=*/true, emit);
}

void Device::HandleCookieReply(absl::Span<uint8_t> datagram, MonoTime now) {
  wire::CookieReply message;
  if (!wire::Parse(datagram, &message)) {
    drops_.Add(Drop::kMalformed);
    return;
  }
  const std::optional<IndexTable::Entry> entry = indices_.Lookup(message.receiver_index);
  if (!entry) {
    drops_.Add(Drop::kUnknownReceiver);
    return;
  }
  absl::MutexLock lock(&entry->peer->mu_);
  if (!entry->peer->cookies_.Consume(message, entry->peer->statics_, now)) {
    drops_.Add(Drop::kCookieInvalid);
  }
}

Device::Received Device::HandleData(absl::Span<uint8_t> datagram, const TransportEndpoint& from,
                                    MonoTime now, absl::Time wall_now, Emit emit) {
  wire::TransportHeader header;
  if (!wire::ParseTransportHeader(datagram, &header)) {
    drops_.Add(Drop::kMalformed);
    return {};
  }
  const std::optional<IndexTable::Entry> entry = indices_.Lookup(header.receiver_index);
  if (!entry || !entry->keypair) {
    drops_.Add(Drop::kUnknownReceiver);
    return {};
  }
  Keypair& keypair = *entry->keypair;
  Peer* peer = entry->peer;
  if (keypair.Expired(now) || header.counter >= kRejectAfterMessages) {
    drops_.Add(Drop::kKeypairExpired);
    return {};
  }
  uint8_t* plaintext = datagram.data() + kTransportHeaderSize;
  const size_t ciphertext_length = datagram.size() - kTransportHeaderSize;
  if (!AeadOpen(keypair.receive_key.data(), header.counter,
                absl::Span<const uint8_t>(plaintext, ciphertext_length), {}, plaintext)) {
    drops_.Add(Drop::kDecryptFailed);
    return {};
  }
  // Only an authenticated counter may advance the window (whitepaper 5.4.6).
  if (!keypair.AcceptCounter(header.counter)) {
    drops_.Add(Drop::kReplayed);
    return {};
  }
  const size_t padded_length = ciphertext_length - wire::kTagSize;
  peer->stats_.rx_bytes.fetch_add(datagram.size(), std::memory_order_relaxed);
  peer->stats_.rx_packets.fetch_add(1, std::memory_order_relaxed);
  {
    absl::MutexLock lock(&peer->mu_);
    if (peer->ConfirmKeypair(&keypair)) {
      peer->stats_.handshakes_completed.fetch_add(1, std::memory_order_relaxed);
      peer->stats_.last_handshake_unix_nanos.store(absl::ToUnixNanos(wall_now));
      FlushStagedLocked(peer, now, /*keepalive_if_empty=*/false, emit);
    }
    // Roaming: the latest authenticated source is where the peer is now (whitepaper 2.1).
    if (peer->roaming_) peer->endpoint_ = from;
    peer->new_handshake_deadline_.reset();
    peer->last_sent_or_received_ = now;
    if (padded_length > 0 && !peer->keepalive_deadline_) {
      peer->keepalive_deadline_ = now + kKeepaliveTimeout;
    }
    // The initiator renews a session before the responder would have to reject it.
    if (keypair.initiator && peer->current_.get() == &keypair && !peer->rekey_on_receive_done_ &&
        now - keypair.created >= kRejectAfterTime - kKeepaliveTimeout - kRekeyTimeout) {
      peer->rekey_on_receive_done_ = true;
      SendInitiationLocked(peer, now, wall_now, emit);
    }
  }
  if (padded_length == 0) return {};  // A keepalive.
  // The IP header's own length strips the transport padding.
  IpHeaderInfo inner;
  if (!ParseIpHeader(absl::Span<const uint8_t>(plaintext, padded_length), &inner)) {
    drops_.Add(Drop::kInnerMalformed);
    return {};
  }
  return Received{Received::Kind::kPacket, peer, inner.total_length};
}

Device::SealResult Device::SealInPlace(Peer* peer, uint8_t* buffer, size_t packet_length,
                                       MonoTime now, absl::Time wall_now, Emit emit,
                                       size_t* message_length, TransportEndpoint* destination) {
  std::shared_ptr<Keypair> keypair;
  uint64_t counter = 0;
  {
    absl::MutexLock lock(&peer->mu_);
    if (!peer->endpoint_) {
      drops_.Add(Drop::kNoEndpoint);
      return SealResult::kDropped;
    }
    keypair = peer->SendKeypair(now);
    if (keypair) {
      counter = keypair->NextCounter();
      if (counter >= kRejectAfterMessages) keypair.reset();
    }
    if (!keypair) {
      if (peer->staged_.size() >= kMaxStaged) {
        peer->staged_.pop_front();
        drops_.Add(Drop::kStagedOverflow);
      }
      peer->staged_.push_back(Peer::Staged{std::vector<uint8_t>(
          buffer + kTransportHeaderSize, buffer + kTransportHeaderSize + packet_length)});
      peer->handshake_wanted_ = true;
      SendInitiationLocked(peer, now, wall_now, emit);
      return SealResult::kStaged;
    }
    *destination = *peer->endpoint_;
    OnAuthenticatedSend(peer, now, /*is_data=*/packet_length > 0);
    // Keep the key fresh: the initiator of a session renews it after REKEY_AFTER_TIME or
    // REKEY_AFTER_MESSAGES (whitepaper 6.2).
    if (keypair->initiator &&
        (now - keypair->created >= rekey_after_time_ || counter >= kRekeyAfterMessages)) {
      SendInitiationLocked(peer, now, wall_now, emit);
    }
  }
  *message_length = SealTransport(*keypair, counter, buffer, packet_length);
  peer->stats_.tx_bytes.fetch_add(*message_length, std::memory_order_relaxed);
  peer->stats_.tx_packets.fetch_add(1, std::memory_order_relaxed);
  return SealResult::kSealed;
}

bool Device::SendOnSessionLocked(Peer* peer, const std::shared_ptr<Keypair>& keypair,
                                 absl::Span<const uint8_t> packet, MonoTime now, Emit emit) {
  const uint64_t counter = keypair->NextCounter();
  if (counter >= kRejectAfterMessages || !peer->endpoint_) return false;
  uint8_t* buffer = Scratch();
  if (!packet.empty()) std::memcpy(buffer + kTransportHeaderSize, packet.data(), packet.size());
  const size_t length = SealTransport(*keypair, counter, buffer, packet.size());
  emit(*peer->endpoint_, absl::Span<const uint8_t>(buffer, length));
  peer->stats_.tx_bytes.fetch_add(length, std::memory_order_relaxed);
  peer->stats_.tx_packets.fetch_add(1, std::memory_order_relaxed);
  OnAuthenticatedSend(peer, now, /*is_data=*/!packet.empty());
  return true;
}

void Device::FlushStagedLocked(Peer* peer, MonoTime now, bool keepalive_if_empty, Emit emit) {
  std::shared_ptr<Keypair> keypair = peer->SendKeypair(now);
  if (!keypair) return;
  if (peer->staged_.empty()) {
    if (keepalive_if_empty) SendOnSessionLocked(peer, keypair, {}, now, emit);
    return;
  }
  while (!peer->staged_.empty()) {
    SendOnSessionLocked(peer, keypair, peer->staged_.front().bytes, now, emit);
    peer->staged_.pop_front();
  }
}

void Device::OnAuthenticatedSend(Peer* peer, MonoTime now, bool is_data) {
  peer->last_sent_or_received_ = now;
  peer->keepalive_deadline_.reset();
  if (is_data && !peer->new_handshake_deadline_) {
    peer->new_handshake_deadline_ = now + kKeepaliveTimeout + kRekeyTimeout;
  }
}

void Device::Initiate(Peer* peer, MonoTime now, absl::Time wall_now, Emit emit) {
  absl::MutexLock lock(&peer->mu_);
  SendInitiationLocked(peer, now, wall_now, emit);
}

void Device::SendInitiationLocked(Peer* peer, MonoTime now, absl::Time wall_now, Emit emit) {
  if (!peer->endpoint_) return;
  // At most one initiation per REKEY_TIMEOUT (whitepaper 6.4).
  if (peer->initiated_ever_ && now - peer->last_initiation_sent_ < kRekeyTimeout) return;
  if (!peer->initiation_pending_) peer->first_initiation_attempt_ = now;
  if (peer->initiation_pending_) indices_.Remove(peer->initiator_.local_index);
  const uint32_t index = indices_.Allocate(peer);
  wire::HandshakeInitiation message;
  if (!CreateInitiation(identity_, peer->statics_, index, wall_now, &peer->initiator_, &message)) {
    indices_.Remove(index);
    peer->initiation_pending_ = false;
    drops_.Add(Drop::kHandshakeInvalid);
    return;
  }
  uint8_t out[wire::kInitiationSize];
  wire::Serialize(message, out);
  peer->cookies_.AddMacs(absl::Span<uint8_t>(out, sizeof(out)), peer->statics_, now);
  peer->initiation_pending_ = true;
  peer->initiated_ever_ = true;
  peer->last_initiation_sent_ = now;
  peer->retransmit_after_ =
      kRekeyTimeout + std::chrono::milliseconds(RandomUniform(kRekeyTimeoutJitterMax.count()));
  peer->stats_.handshakes_initiated.fetch_add(1, std::memory_order_relaxed);
  emit(*peer->endpoint_, absl::Span<const uint8_t>(out, sizeof(out)));
  OnAuthenticatedSend(peer, now, /*is_data=*/false);
}

void Device::TickPeerLocked(Peer* peer, MonoTime now, absl::Time wall_now, Emit emit) {
  if (peer->initiation_pending_ && now - peer->last_initiation_sent_ >= peer->retransmit_after_) {
    if (now - peer->first_initiation_attempt_ >= kRekeyAttemptTime) {
      // Give up (whitepaper 6.4): drop what waited, and try again only when new traffic asks.
      drops_.Add(Drop::kHandshakeTimeout, peer->staged_.size());
      peer->stats_.handshake_timeouts.fetch_add(1, std::memory_order_relaxed);
      peer->staged_.clear();
      peer->ClearHandshake();
    } else {
      SendInitiationLocked(peer, now, wall_now, emit);
    }
  }
  if (peer->keepalive_deadline_ && now >= *peer->keepalive_deadline_) {
    peer->keepalive_deadline_.reset();
    if (auto keypair = peer->SendKeypair(now)) SendOnSessionLocked(peer, keypair, {}, now, emit);
  }
  if (peer->new_handshake_deadline_ && now >= *peer->new_handshake_deadline_) {
    // We sent data and heard nothing back for KEEPALIVE + REKEY_TIMEOUT: the session may be dead.
    peer->new_handshake_deadline_.reset();
    SendInitiationLocked(peer, now, wall_now, emit);
  }
  if (peer->zero_keys_deadline_ && now >= *peer->zero_keys_deadline_) {
    peer->zero_keys_deadline_.reset();
    peer->ZeroAllKeys();
  }
  if (peer->persistent_keepalive_.count() > 0 && peer->endpoint_ &&
      (!peer->traversed_ever_ ||
       now - peer->last_sent_or_received_ >= peer->persistent_keepalive_)) {
    peer->traversed_ever_ = true;
    if (auto keypair = peer->SendKeypair(now)) {
      SendOnSessionLocked(peer, keypair, {}, now, emit);
    } else {
      // Without a session, a keepalive means a handshake first; the keepalive follows it.
      SendInitiationLocked(peer, now, wall_now, emit);
      peer->last_sent_or_received_ = now;
    }
  }
}

void Device::Tick(MonoTime now, absl::Time wall_now, Emit emit) {
  {
    absl::MutexLock lock(&peers_mu_);
    while (!retired_.empty() && now - retired_.front().first >= kRetireAfter) {
      retired_.erase(retired_.begin());
    }
  }
  absl::ReaderMutexLock peers_lock(&peers_mu_);
  for (const auto& peer : peers_) {
    absl::MutexLock lock(&peer->mu_);
    TickPeerLocked(peer.get(), now, wall_now, emit);
  }
}

}  // namespace tunnelmesh::noise
