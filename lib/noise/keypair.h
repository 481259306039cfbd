// A session's transport keys (one direction each), its indices and its counters, shared between the
// threads that send and receive with it. Keys and indices never change after construction; the send
// counter is atomic and the replay window has its own small lock.
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "lib/base/clock.h"
#include "lib/crypto/keys.h"
#include "lib/noise/constants.h"
#include "lib/noise/replay_window.h"

namespace tunnelmesh::noise {

struct Keypair {
  Keypair(SecretKey send, SecretKey receive, uint32_t local, uint32_t remote, MonoTime born,
          bool is_initiator)
      : send_key(std::move(send)),
        receive_key(std::move(receive)),
        local_index(local),
        remote_index(remote),
        created(born),
        initiator(is_initiator) {}

  // REJECT_AFTER_TIME: a keypair this old is used for nothing.
  bool Expired(MonoTime now) const { return now - created >= kRejectAfterTime; }

  // Reserves the next send counter; a value >= kRejectAfterMessages means the keypair is spent.
  uint64_t NextCounter() { return send_counter.fetch_add(1, std::memory_order_relaxed); }

  // Records a received counter after the packet authenticated; false for a replay.
  bool AcceptCounter(uint64_t counter) {
    absl::MutexLock lock(&replay_mu);
    return replay.Accept(counter, kRejectAfterMessages);
  }

  const SecretKey send_key;
  const SecretKey receive_key;
  const uint32_t local_index;
  const uint32_t remote_index;
  const MonoTime created;
  const bool initiator;
  std::atomic<uint64_t> send_counter{0};
  absl::Mutex replay_mu;
  ReplayWindow replay ABSL_GUARDED_BY(replay_mu);
};

}  // namespace tunnelmesh::noise
