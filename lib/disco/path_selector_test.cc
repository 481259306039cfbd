#include "lib/disco/path_selector.h"

#include <algorithm>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/testing/fake_clock.h"

namespace tunnelmesh::disco {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

Endpoint Ep(const char* text) { return *Endpoint::Parse(text); }

const Endpoint kA = Ep("192.0.2.1:51820");
const Endpoint kB = Ep("[2001:db8::2]:51820");
const Endpoint kC = Ep("10.1.2.3:41641");
const Endpoint kX = Ep("198.51.100.77:3333");

std::vector<Endpoint> Targets(const PathActions& actions) {
  std::vector<Endpoint> out;
  for (const PingRequest& p : actions.pings) out.push_back(p.endpoint);
  return out;
}

const PingRequest* PingTo(const PathActions& actions, const Endpoint& endpoint) {
  for (const PingRequest& p : actions.pings) {
    if (p.endpoint == endpoint) return &p;
  }
  return nullptr;
}

class PathSelectorTest : public ::testing::Test {
 protected:
  MonoTime Now() const { return clock_.Now(); }

  // Runs the clock forward by `duration` in `step`s, calling Tick at each, and returns every action
  // requested on the way. `on_actions` (if set) sees each step's actions and may answer them.
  template <typename F>
  PathActions RunFor(Duration duration, Duration step, F on_actions) {
    PathActions all;
    for (Duration elapsed{}; elapsed < duration; elapsed += step) {
      clock_.Advance(step);
      selector_.Tick(Now());
      PathActions actions = selector_.TakeActions();
      on_actions(actions);
      all.pings.insert(all.pings.end(), actions.pings.begin(), actions.pings.end());
      all.send_call_me_maybe |= actions.send_call_me_maybe;
      all.connect_ssh |= actions.connect_ssh;
    }
    return all;
  }
  PathActions RunFor(Duration duration, Duration step = milliseconds(10)) {
    return RunFor(duration, step, [](const PathActions&) {});
  }

  // Candidates {A, B} behind a relay, then A answers the first round after `rtt`.
  void GoDirectViaA(Duration rtt = milliseconds(20)) {
    selector_.SetRelayAvailable(true);
    selector_.SetCandidates({kA, kB}, Now());
    PathActions actions = selector_.TakeActions();
    const PingRequest* ping = PingTo(actions, kA);
    ASSERT_NE(ping, nullptr);
    clock_.Advance(rtt);
    selector_.OnPong(kA, ping->tx_id, Now());
    ASSERT_EQ(selector_.CurrentPath(), (Path{PathKind::kDirect, kA}));
  }

  FakeClock clock_;
  uint32_t next_tx_ = 0;
  // Sequential transaction ids keep the tests deterministic.
  PathSelector selector_{[this] {
    TxId id{};
    ++next_tx_;
    for (int i = 0; i < 4; ++i) id[i] = static_cast<uint8_t>(next_tx_ >> (8 * i));
    return id;
  }};
};

TEST_F(PathSelectorTest, RelayFirst) {
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kNone);
  EXPECT_EQ(selector_.NextDeadline(), std::nullopt);
  selector_.SetRelayAvailable(true);
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kRelay, Endpoint()}));

  selector_.SetCandidates({kA, kB}, Now());
  // Traffic keeps using the relay while the probes are out; the peer is asked to punch too.
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
  PathActions actions = selector_.TakeActions();
  EXPECT_THAT(Targets(actions), ElementsAre(kA, kB));
  EXPECT_TRUE(actions.send_call_me_maybe);
  EXPECT_NE(actions.pings[0].tx_id, actions.pings[1].tx_id);
  EXPECT_EQ(selector_.NextDeadline(), Now() + kProbeIntervalMin);
  EXPECT_TRUE(selector_.TakeActions().empty());

  selector_.SetRelayAvailable(false);
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kNone);
}

TEST_F(PathSelectorTest, PongUpgradesToDirectWithItsLatency) {
  GoDirectViaA(milliseconds(20));
  EXPECT_EQ(selector_.DirectLatency(), milliseconds(20));
  EXPECT_EQ(selector_.stats().upgrades, 1u);
  EXPECT_EQ(selector_.stats().pongs_accepted, 1u);
  // Direct: the next timer is the heartbeat, and no more probe rounds are scheduled.
  EXPECT_EQ(selector_.NextDeadline(), Now() + kHeartbeatInterval);
}

TEST_F(PathSelectorTest, FirstAndFastestAnswerOfARoundWins) {
  selector_.SetRelayAvailable(true);
  selector_.SetCandidates({kA, kB}, Now());
  PathActions round = selector_.TakeActions();
  clock_.Advance(milliseconds(3));
  selector_.OnPong(kB, PingTo(round, kB)->tx_id, Now());
  clock_.Advance(milliseconds(40));
  selector_.OnPong(kA, PingTo(round, kA)->tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kDirect, kB}));
  EXPECT_EQ(selector_.DirectLatency(), milliseconds(3));
  EXPECT_EQ(selector_.stats().switches, 0u);
}

TEST_F(PathSelectorTest, MuchFasterEndpointTakesOverButNearEqualDoesNot) {
  GoDirectViaA(milliseconds(30));
  // A new candidate starts a round even on a direct path.
  selector_.SetCandidates({kA, kB, kC}, Now());
  PathActions round = selector_.TakeActions();
  EXPECT_THAT(Targets(round), ElementsAre(kA, kB, kC));
  clock_.Advance(milliseconds(28));  // B: 28 ms, under 10% better than 30 ms.
  selector_.OnPong(kB, PingTo(round, kB)->tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath().endpoint, kA);
  clock_.Advance(milliseconds(1));  // A: 29 ms, the current path just gets fresher.
  selector_.OnPong(kA, PingTo(round, kA)->tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath().endpoint, kA);

  selector_.SetCandidates({kA, kB, kC, kX}, Now());
  round = selector_.TakeActions();
  clock_.Advance(milliseconds(2));
  selector_.OnPong(kC, PingTo(round, kC)->tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kDirect, kC}));
  EXPECT_EQ(selector_.DirectLatency(), milliseconds(2));
  EXPECT_EQ(selector_.stats().switches, 1u);
  EXPECT_EQ(selector_.stats().upgrades, 1u);
}

TEST_F(PathSelectorTest, HeartbeatsKeepAnAnsweringPathDirect) {
  GoDirectViaA();
  std::vector<MonoTime> heartbeat_times;
  PathActions all = RunFor(seconds(5), milliseconds(10), [&](const PathActions& actions) {
    for (const PingRequest& p : actions.pings) {
      heartbeat_times.push_back(Now());
      selector_.OnPong(p.endpoint, p.tx_id, Now());  // Answered at once (RTT below one step).
    }
  });
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kDirect, kA}));
  EXPECT_FALSE(all.send_call_me_maybe);
  ASSERT_GE(heartbeat_times.size(), 10u);
  for (const PingRequest& p : all.pings) EXPECT_EQ(p.endpoint, kA);
  for (size_t i = 1; i < heartbeat_times.size(); ++i) {
    Duration gap = heartbeat_times[i] - heartbeat_times[i - 1];
    EXPECT_GE(gap, milliseconds(250));
    EXPECT_LE(gap, milliseconds(500));
  }
  EXPECT_EQ(selector_.stats().fallbacks, 0u);
}

TEST_F(PathSelectorTest, FallsBackToRelayWithinASecondOfSilence) {
  GoDirectViaA();
  RunFor(seconds(2), milliseconds(10), [&](const PathActions& actions) {
    for (const PingRequest& p : actions.pings) selector_.OnPong(p.endpoint, p.tx_id, Now());
  });
  // The path goes silent now: heartbeats go out, nothing comes back.
  MonoTime silent_since = Now();
  MonoTime fell_back_at{};
  PathActions at_fallback;
  RunFor(seconds(2), milliseconds(10), [&](const PathActions& actions) {
    if (fell_back_at == MonoTime{} && selector_.CurrentPath().kind != PathKind::kDirect) {
      fell_back_at = Now();
      at_fallback = actions;
    }
  });
  ASSERT_NE(fell_back_at, MonoTime{});
  EXPECT_LE(fell_back_at - silent_since, kPathTimeout);
  EXPECT_GE(fell_back_at - silent_since, kPathTimeout - kHeartbeatInterval);
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kRelay, Endpoint()}));
  EXPECT_EQ(selector_.DirectLatency(), std::nullopt);
  EXPECT_EQ(selector_.stats().fallbacks, 1u);
  // Probing starts again at once, the lost endpoint included, and the peer is asked to punch.
  EXPECT_THAT(Targets(at_fallback), ElementsAre(kA, kB));
  EXPECT_TRUE(at_fallback.send_call_me_maybe);
}

TEST_F(PathSelectorTest, FallbackWithoutRelayMeansNoPath) {
  GoDirectViaA();
  selector_.SetRelayAvailable(false);
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kDirect);
  RunFor(kPathTimeout + milliseconds(10));
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kNone);
}

TEST_F(PathSelectorTest, NotFallingBackBeforeTheTimeout) {
  GoDirectViaA();
  MonoTime upgraded = Now();
  RunFor(kPathTimeout - milliseconds(10), milliseconds(10));
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kDirect);
  EXPECT_EQ(selector_.NextDeadline(), upgraded + kPathTimeout);
  RunFor(milliseconds(10), milliseconds(10));
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
}

TEST_F(PathSelectorTest, AuthenticatedDirectPacketsAloneKeepThePathAlive) {
  GoDirectViaA();
  RunFor(seconds(5), milliseconds(10),
         [&](const PathActions&) { selector_.OnAuthenticatedDirectPacket(kA, Now()); });
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kDirect, kA}));
  // Packets from another endpoint do not prove this one.
  RunFor(seconds(2), milliseconds(10),
         [&](const PathActions&) { selector_.OnAuthenticatedDirectPacket(kB, Now()); });
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
}

TEST_F(PathSelectorTest, PingsFromThePeerDoNotKeepThePathAlive) {
  GoDirectViaA();
  // A ping can be a replay, so it never proves the path.
  RunFor(seconds(2), milliseconds(10),
         [&](const PathActions&) { selector_.OnPingReceived(kA, Now()); });
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
}

TEST_F(PathSelectorTest, ReUpgradesAfterFallback) {
  GoDirectViaA();
  PathActions at_fallback;
  RunFor(seconds(2), milliseconds(10), [&](const PathActions& actions) {
    if (actions.send_call_me_maybe) at_fallback = actions;
  });
  ASSERT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
  ASSERT_NE(PingTo(at_fallback, kA), nullptr);
  // The fallback round's ping went out more than a second ago but within kPingTimeout; the path
  // is back.
  selector_.OnPong(kA, PingTo(at_fallback, kA)->tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kDirect, kA}));
  EXPECT_EQ(selector_.stats().upgrades, 2u);
  EXPECT_EQ(selector_.stats().fallbacks, 1u);
  // And stays up while it answers.
  RunFor(seconds(3), milliseconds(10), [&](const PathActions& actions) {
    for (const PingRequest& p : actions.pings) selector_.OnPong(p.endpoint, p.tx_id, Now());
  });
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kDirect, kA}));
}

TEST_F(PathSelectorTest, ReUpgradesOnAScheduledRoundAfterALongerOutage) {
  GoDirectViaA();
  RunFor(seconds(3));  // Fallback, and the first retry round at +2 s, both unanswered.
  ASSERT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
  // From now on B answers (the next scheduled round is at +7 s).
  RunFor(seconds(10), milliseconds(10), [&](const PathActions& actions) {
    for (const PingRequest& p : actions.pings) {
      if (p.endpoint == kB) selector_.OnPong(p.endpoint, p.tx_id, Now());
    }
  });
  EXPECT_EQ(selector_.CurrentPath().endpoint, kB);
  EXPECT_EQ(selector_.stats().upgrades, 2u);
}

TEST_F(PathSelectorTest, BackoffDoublesUpToThirtySeconds) {
  selector_.SetRelayAvailable(true);
  MonoTime start = Now();
  selector_.SetCandidates({kA}, Now());
  ASSERT_EQ(selector_.TakeActions().pings.size(), 1u);
  std::vector<int64_t> round_ms;
  size_t call_me_maybes = 0;
  RunFor(seconds(125), milliseconds(100), [&](const PathActions& actions) {
    if (!actions.pings.empty()) {
      round_ms.push_back(std::chrono::duration_cast<milliseconds>(Now() - start).count());
    }
    call_me_maybes += actions.send_call_me_maybe;
  });
  EXPECT_THAT(round_ms, ElementsAre(2000, 6000, 14000, 30000, 60000, 90000, 120000));
  // Every round the selector starts itself asks the peer to punch at the same time.
  EXPECT_EQ(call_me_maybes, round_ms.size());
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
}

TEST_F(PathSelectorTest, CallMeMaybeProbesAtOnceWithoutAskingBack) {
  selector_.SetRelayAvailable(true);
  selector_.SetCandidates({kA, kB}, Now());
  selector_.TakeActions();
  RunFor(seconds(20), milliseconds(100));  // Backed off: rounds at 2, 6, 14; next at 30.
  ASSERT_EQ(selector_.NextDeadline(), clock_.Now() + seconds(10));

  // The peer punches now and lists an endpoint not seen before: probe everything at once.
  selector_.OnCallMeMaybe({kB, kC}, Now());
  PathActions actions = selector_.TakeActions();
  EXPECT_THAT(Targets(actions), ElementsAre(kA, kB, kC));
  EXPECT_FALSE(actions.send_call_me_maybe);
  // New endpoints reset the backoff.
  EXPECT_EQ(selector_.NextDeadline(), Now() + kProbeIntervalMin);

  // A repeat with nothing new still probes at once but leaves the schedule alone, so two peers
  // cannot keep resetting each other's backoff.
  RunFor(seconds(5), milliseconds(100));  // Rounds at +2 s; the next one is due at +6 s.
  MonoTime due = *selector_.NextDeadline();
  selector_.OnCallMeMaybe({kC}, Now());
  actions = selector_.TakeActions();
  EXPECT_THAT(Targets(actions), ElementsAre(kA, kB, kC));
  EXPECT_FALSE(actions.send_call_me_maybe);
  EXPECT_EQ(selector_.NextDeadline(), due);
  EXPECT_EQ(selector_.stats().call_me_maybe_received, 2u);

  // The answer to a call-me-maybe round confirms a path like any other.
  clock_.Advance(milliseconds(15));
  selector_.OnPong(kC, PingTo(actions, kC)->tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kDirect, kC}));
}

TEST_F(PathSelectorTest, CallMeMaybeWithoutCandidatesStillProbes) {
  selector_.SetRelayAvailable(true);
  selector_.OnCallMeMaybe({kC}, Now());
  EXPECT_THAT(Targets(selector_.TakeActions()), ElementsAre(kC));
  EXPECT_EQ(selector_.NextDeadline(), Now() + kProbeIntervalMin);
}

TEST_F(PathSelectorTest, CandidateChanges) {
  selector_.SetRelayAvailable(true);
  // Port 0 and duplicates are dropped.
  selector_.SetCandidates({kA, Endpoint(kB.address(), 0), kA, kB}, Now());
  PathActions actions = selector_.TakeActions();
  EXPECT_THAT(Targets(actions), ElementsAre(kA, kB));
  EXPECT_TRUE(actions.send_call_me_maybe);
  RunFor(seconds(10), milliseconds(100));  // Rounds at 2 and 6; backed off to 8 s.
  ASSERT_EQ(selector_.NextDeadline(), Now() + seconds(4));

  // The same set again (reordered) is not news.
  selector_.SetCandidates({kB, kA}, Now());
  EXPECT_TRUE(selector_.TakeActions().empty());
  EXPECT_EQ(selector_.NextDeadline(), Now() + seconds(4));

  // A removal is not news either.
  selector_.SetCandidates({kB}, Now());
  EXPECT_TRUE(selector_.TakeActions().empty());

  // A new endpoint is: probe now, reset the backoff.
  selector_.SetCandidates({kB, kC}, Now());
  actions = selector_.TakeActions();
  EXPECT_THAT(Targets(actions), ElementsAre(kB, kC));
  EXPECT_TRUE(actions.send_call_me_maybe);
  EXPECT_EQ(selector_.NextDeadline(), Now() + kProbeIntervalMin);

  // Another change within kCallMeMaybeMinInterval probes but does not ask the peer again.
  clock_.Advance(milliseconds(200));
  selector_.SetCandidates({kB, kC, kX}, Now());
  actions = selector_.TakeActions();
  EXPECT_THAT(Targets(actions), ElementsAre(kB, kC, kX));
  EXPECT_FALSE(actions.send_call_me_maybe);

  // No candidates: nothing to probe, no timer.
  selector_.SetCandidates({}, Now());
  EXPECT_EQ(selector_.NextDeadline(), std::nullopt);
  EXPECT_TRUE(RunFor(seconds(60), milliseconds(500)).empty());
}

TEST_F(PathSelectorTest, CandidatesAreCapped) {
  std::vector<Endpoint> many;
  for (uint16_t port = 1; port <= 40; ++port) many.push_back(Endpoint(kA.address(), port));
  selector_.SetCandidates(many, Now());
  EXPECT_EQ(selector_.TakeActions().pings.size(), kMaxCandidates);
}

TEST_F(PathSelectorTest, StaleAndUnknownPongsAreIgnored) {
  selector_.SetRelayAvailable(true);
  selector_.SetCandidates({kA, kB}, Now());
  PathActions round = selector_.TakeActions();
  TxId unknown{};
  unknown.fill(0xEE);
  selector_.OnPong(kA, unknown, Now());
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
  // The right id from the wrong endpoint proves nothing, and does not use the id up.
  selector_.OnPong(kX, PingTo(round, kA)->tx_id, Now());
  selector_.OnPong(kB, PingTo(round, kA)->tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
  EXPECT_EQ(selector_.stats().pongs_ignored, 3u);
  // In time, then replayed: the replay is ignored.
  clock_.Advance(milliseconds(50));
  selector_.OnPong(kA, PingTo(round, kA)->tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kDirect, kA}));
  selector_.OnPong(kA, PingTo(round, kA)->tx_id, Now());
  EXPECT_EQ(selector_.stats().pongs_ignored, 4u);
  // Too late: past kPingTimeout, even from a much faster-looking endpoint.
  clock_.Advance(kPingTimeout);
  selector_.OnPong(kB, PingTo(round, kB)->tx_id, Now());
  EXPECT_EQ(selector_.stats().pongs_ignored, 5u);
  EXPECT_EQ(selector_.stats().pongs_accepted, 1u);
}

TEST_F(PathSelectorTest, ExpiredPingsAreForgottenByTick) {
  MonoTime sent = Now();
  selector_.SetCandidates({kA}, Now());
  PathActions round = selector_.TakeActions();
  RunFor(kPingTimeout + milliseconds(100), milliseconds(100));
  // Tick forgot the id, so even a pong stamped in time no longer matches.
  selector_.OnPong(kA, round.pings[0].tx_id, sent + milliseconds(1));
  EXPECT_NE(selector_.CurrentPath().kind, PathKind::kDirect);
  EXPECT_EQ(selector_.stats().pongs_ignored, 1u);
}

TEST_F(PathSelectorTest, HintsProbeTheEndpointThePeerUses) {
  selector_.SetRelayAvailable(true);
  selector_.SetCandidates({kA}, Now());
  selector_.TakeActions();
  // The peer's ping arrives from an endpoint nobody listed (its NAT's mapping toward us).
  selector_.OnPingReceived(kX, Now());
  PathActions actions = selector_.TakeActions();
  EXPECT_THAT(Targets(actions), ElementsAre(kX));
  EXPECT_FALSE(actions.send_call_me_maybe);
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);  // A hint proves nothing.
  // Spaced per endpoint.
  clock_.Advance(milliseconds(500));
  selector_.OnPingReceived(kX, Now());
  selector_.OnAuthenticatedDirectPacket(kX, Now());
  EXPECT_TRUE(selector_.TakeActions().empty());
  clock_.Advance(milliseconds(500));
  selector_.OnAuthenticatedDirectPacket(kX, Now());
  actions = selector_.TakeActions();
  ASSERT_THAT(Targets(actions), ElementsAre(kX));
  clock_.Advance(milliseconds(10));
  selector_.OnPong(kX, actions.pings[0].tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kDirect, kX}));
  EXPECT_EQ(selector_.stats().hint_pings, 2u);
}

TEST_F(PathSelectorTest, HintsAreBoundedAcrossEndpoints) {
  for (uint16_t port = 1; port <= 20; ++port) {
    selector_.OnPingReceived(Endpoint(kX.address(), port), Now());
  }
  EXPECT_EQ(selector_.TakeActions().pings.size(), kHintSlots);
  clock_.Advance(kHintPingSpacing);
  for (uint16_t port = 101; port <= 120; ++port) {
    selector_.OnPingReceived(Endpoint(kX.address(), port), Now());
  }
  EXPECT_EQ(selector_.TakeActions().pings.size(), kHintSlots);
}

TEST_F(PathSelectorTest, OutstandingPingsAreBounded) {
  std::vector<Endpoint> candidates;
  for (uint16_t port = 1; port <= kMaxCandidates; ++port) {
    candidates.push_back(Endpoint(kA.address(), port));
  }
  selector_.SetCandidates(candidates, Now());
  PathActions first = selector_.TakeActions();
  // Enough call-me-maybes to push the first round's ids out of the table.
  // Each a second apart (closer ones start no round) and listing kMaxCandidates endpoints of its
  // own, so that a round pings 2 * kMaxCandidates and the first round's pings leave the table
  // before kPingTimeout makes them stale anyway.
  std::vector<Endpoint> listed;
  for (uint16_t port = 1; port <= kMaxCandidates; ++port) {
    listed.push_back(Endpoint(kB.address(), port));
  }
  const size_t rounds = kMaxOutstandingPings / (2 * kMaxCandidates);
  ASSERT_LT(rounds * kCallMeMaybeMinInterval, kPingTimeout);
  for (size_t i = 0; i < rounds; ++i) {
    clock_.Advance(kCallMeMaybeMinInterval);
    selector_.OnCallMeMaybe(listed, Now());
  }
  selector_.TakeActions();
  selector_.OnPong(first.pings[0].endpoint, first.pings[0].tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kNone);
  EXPECT_EQ(selector_.stats().pongs_ignored, 1u);
}

TEST_F(PathSelectorTest, CallMeMaybeFloodStartsOneRoundPerInterval) {
  selector_.SetCandidates({Endpoint(kA.address(), 1)}, Now());
  selector_.TakeActions();
  const uint64_t rounds = selector_.stats().probe_rounds;
  // 1000 call-me-maybes within one interval, each naming 16 endpoints: one round, not 1000.
  std::vector<Endpoint> listed;
  for (uint16_t port = 9001; port <= 9016; ++port) listed.push_back(Endpoint(kX.address(), port));
  size_t pings = 0;
  for (int i = 0; i < 1000; ++i) {
    selector_.OnCallMeMaybe(listed, Now());
    pings += selector_.TakeActions().pings.size();
  }
  EXPECT_EQ(selector_.stats().probe_rounds, rounds + 1);
  EXPECT_EQ(selector_.stats().call_me_maybe_deferred, 999u);
  EXPECT_LE(pings, 2 * kMaxCandidates);
  // After the interval the next one probes again.
  clock_.Advance(kCallMeMaybeMinInterval);
  selector_.OnCallMeMaybe(listed, Now());
  EXPECT_GT(selector_.TakeActions().pings.size(), 0u);
}

TEST_F(PathSelectorTest, PathKindNames) {
  EXPECT_STREQ(PathKindName(PathKind::kDirect), "direct");
  EXPECT_STREQ(PathKindName(PathKind::kRelay), "relay");
  EXPECT_STREQ(PathKindName(PathKind::kNone), "none");
  EXPECT_STREQ(PathKindName(PathKind::kSsh), "ssh");
}

const PingRequest* SshPing(const PathActions& actions) {
  for (const PingRequest& p : actions.pings) {
    if (p.ssh) return &p;
  }
  return nullptr;
}

TEST_F(PathSelectorTest, SshBeatsTheRelayOnceAPongComesBackOverIt) {
  selector_.SetRelayAvailable(true);
  selector_.SetCandidates({kA}, Now());
  (void)selector_.TakeActions();
  // Offered but not connected: the selector asks for a connection, and traffic stays on the relay.
  selector_.SetSsh(true, false, Now());
  EXPECT_TRUE(selector_.TakeActions().connect_ssh);
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);

  // Connected: a ping goes over SSH at once; until its pong arrives the relay carries traffic.
  selector_.SetSsh(true, true, Now());
  PathActions actions = selector_.TakeActions();
  EXPECT_FALSE(actions.connect_ssh);
  const PingRequest* ping = SshPing(actions);
  ASSERT_NE(ping, nullptr);
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
  // A UDP pong with that id proves nothing about SSH (and the reverse).
  selector_.OnPong(kA, ping->tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
  // The next heartbeat over SSH.
  clock_.Advance(kHeartbeatInterval);
  selector_.Tick(Now());
  actions = selector_.TakeActions();
  ping = SshPing(actions);
  ASSERT_NE(ping, nullptr);
  clock_.Advance(milliseconds(4));
  selector_.OnSshPong(ping->tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kSsh, Endpoint()}));
  EXPECT_EQ(selector_.SshLatency(), milliseconds(4));
  EXPECT_EQ(selector_.stats().ssh_upgrades, 1u);

  // Heartbeats over SSH keep it; direct probing goes on meanwhile.
  RunFor(seconds(3), milliseconds(10), [&](const PathActions& a) {
    if (const PingRequest* p = SshPing(a)) selector_.OnSshPong(p->tx_id, Now());
  });
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kSsh);

  // A direct path that answers (the next probe round's ping to A) takes over from SSH.
  bool answered = false;
  for (int i = 0; i < 3000 && !answered; ++i) {
    clock_.Advance(milliseconds(10));
    selector_.Tick(Now());
    PathActions a = selector_.TakeActions();
    if (const PingRequest* p = SshPing(a)) selector_.OnSshPong(p->tx_id, Now());
    if (const PingRequest* d = PingTo(a, kA)) {
      answered = true;
      selector_.OnPong(kA, d->tx_id, Now());
    }
  }
  ASSERT_TRUE(answered);
  EXPECT_EQ(selector_.CurrentPath(), (Path{PathKind::kDirect, kA}));
  // No SSH heartbeats while direct.
  PathActions while_direct = RunFor(seconds(1), milliseconds(10), [&](const PathActions& a) {
    for (const PingRequest& p : a.pings) {
      if (!p.ssh) selector_.OnPong(p.endpoint, p.tx_id, Now());
    }
  });
  EXPECT_EQ(SshPing(while_direct), nullptr);
}

TEST_F(PathSelectorTest, SilentSshFallsBackToTheRelayWithinAboutASecond) {
  selector_.SetRelayAvailable(true);
  selector_.SetSsh(true, true, Now());
  // The ping points into the actions: keep them alive while it is used.
  PathActions actions = selector_.TakeActions();
  const PingRequest* ping = SshPing(actions);
  ASSERT_NE(ping, nullptr);
  selector_.OnSshPong(ping->tx_id, Now());
  ASSERT_EQ(selector_.CurrentPath().kind, PathKind::kSsh);
  // No more pongs: dead after kPathTimeout.
  const MonoTime silent_since = Now();
  while (selector_.CurrentPath().kind == PathKind::kSsh) {
    clock_.Advance(milliseconds(10));
    selector_.SetSsh(true, true, Now());
    selector_.Tick(Now());
    (void)selector_.TakeActions();
  }
  EXPECT_LE(Now() - silent_since, kPathTimeout + milliseconds(10));
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
  EXPECT_EQ(selector_.stats().ssh_fallbacks, 1u);
  // Pings continue over the connection, and an answer brings SSH back.
  clock_.Advance(kHeartbeatInterval);
  selector_.Tick(Now());
  actions = selector_.TakeActions();
  ping = SshPing(actions);
  ASSERT_NE(ping, nullptr);
  selector_.OnSshPong(ping->tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kSsh);

  // A dropped connection ends the SSH path at once.
  selector_.SetSsh(true, false, Now());
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
  EXPECT_EQ(selector_.stats().ssh_fallbacks, 2u);
  // A pong arriving late over the old connection changes nothing.
  selector_.OnSshPong(ping->tx_id, Now());
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
}

TEST_F(PathSelectorTest, DirectFailureAsksForSsh) {
  GoDirectViaA();
  selector_.SetSsh(true, false, Now());
  // While direct, no SSH connection is wanted.
  EXPECT_FALSE(selector_.TakeActions().connect_ssh);
  PathActions after = RunFor(kPathTimeout + milliseconds(20));
  (void)after;
  EXPECT_EQ(selector_.CurrentPath().kind, PathKind::kRelay);
  selector_.Tick(Now());
  EXPECT_TRUE(selector_.TakeActions().connect_ssh || after.connect_ssh);
}

TEST_F(PathSelectorTest, DefaultConstructorDrawsRandomIds) {
  PathSelector selector;
  selector.SetCandidates({kA, kB}, Now());
  PathActions actions = selector.TakeActions();
  ASSERT_EQ(actions.pings.size(), 2u);
  EXPECT_NE(actions.pings[0].tx_id, actions.pings[1].tx_id);
  selector.OnPong(kB, actions.pings[1].tx_id, Now());
  EXPECT_EQ(selector.CurrentPath().kind, PathKind::kDirect);
}

}  // namespace
}  // namespace tunnelmesh::disco
