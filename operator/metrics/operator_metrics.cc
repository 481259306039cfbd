#include "operator/metrics/operator_metrics.h"

#include <utility>

#include "lib/metrics/exposition.h"
#include "proto/member_kind.h"

namespace tunnelmesh {
namespace {

using metrics::Exposition;
using metrics::Family;

uint64_t Load(const std::atomic<uint64_t>& counter) {
  return counter.load(std::memory_order_relaxed);
}

void AddCoordinator(Coordinator& coordinator, Exposition* e) {
  Family& members = e->Gauge("tunnelmesh_operator_members", "Members by mesh and kind.");
  Family& watching =
      e->Gauge("tunnelmesh_operator_watch_streams",
               "Open Watch streams (members following the network map), by mesh and kind.");
  for (const MemberCount& c : coordinator.MemberCounts()) {
    const metrics::Labels labels{{"mesh", c.mesh}, {"kind", MemberKindName(c.kind)}};
    members.AddCount(labels, c.members);
    watching.AddCount(labels, c.watching);
  }
  e->Gauge("tunnelmesh_operator_policies", "PeerPolicies compiled into rule sets.")
      .AddCount({}, coordinator.policy_count());
  CoordinatorCounters& c = coordinator.counters();
  e->Counter("tunnelmesh_operator_registrations", "Registrations the coordinator accepted.")
      .AddCount({}, Load(c.registrations));
  Family& refused = e->Counter(
      "tunnelmesh_operator_registration_refusals",
      "Registrations and calls the coordinator refused, by reason (docs/troubleshooting.md).");
  refused.AddCount({{"reason", "wrong_token"}}, Load(c.rejected_tokens));
  refused.AddCount({{"reason", "bad_proof"}}, Load(c.refused_proofs));
  refused.AddCount({{"reason", "token_member_cap"}}, Load(c.refused_token_cap));
  refused.AddCount({{"reason", "removed_key"}}, Load(c.refused_removed_keys));
  refused.AddCount({{"reason", "rate_limited"}}, Load(c.rate_limited));
  refused.AddCount({{"reason", "malformed"}}, Load(c.malformed_requests));
  refused.AddCount({{"reason", "unauthenticated"}}, Load(c.unauthenticated_calls));
  e->Counter("tunnelmesh_operator_refused_joins",
             "Joins refused and recorded for `tunnelmesh-operator refused` (all reasons).")
      .AddCount({}, coordinator.refused_joins().total());
  e->Counter("tunnelmesh_operator_map_updates_sent",
             "Network-map updates queued to watching members (deltas and full maps).")
      .AddCount({}, Load(c.updates_sent));
  e->Counter("tunnelmesh_operator_filter_updates_sent",
             "Map updates that carried a changed packet-filter rule set to a member.")
      .AddCount({}, Load(c.filter_updates_sent));
  e->Counter("tunnelmesh_operator_watch_collapses",
             "Slow watchers whose backlog of deltas collapsed into one full map.")
      .AddCount({}, Load(c.watch_collapses));
  e->Counter("tunnelmesh_operator_watch_takeovers",
             "Watch streams replaced by a new one of the same member.")
      .AddCount({}, Load(c.watch_takeovers));
  e->Histogram("tunnelmesh_operator_fanout_seconds",
               "Seconds from an update queued for a member (a change, or the full map a new watch "
               "starts with) until its Watch stream took it to send.")
      .AddHistogram({}, c.fanout_seconds.Take());
  e->Counter("tunnelmesh_operator_expired_members",
             "Members removed because their agent was not seen for --member-expiry.")
      .AddCount({}, Load(c.expired_members));
  Family& writes = e->Counter("tunnelmesh_operator_store_writes",
                              "Member records written to the store, by result.");
  writes.AddCount({{"result", "ok"}}, Load(c.store.writes));
  writes.AddCount({{"result", "failed"}}, Load(c.store.failures));
  writes.AddCount({{"result", "retried"}}, Load(c.store.retries));
}

void AddRelay(const RelayServer& relay, Exposition* e) {
  const RelayCounters& r = relay.counters();
  e->Gauge("tunnelmesh_operator_relay_sessions", "Authenticated relay connections now.")
      .Add({}, static_cast<double>(r.sessions.load(std::memory_order_relaxed)));
  e->Counter("tunnelmesh_operator_relay_connections", "Relay connections accepted.")
      .AddCount({}, Load(r.connections));
  e->Counter("tunnelmesh_operator_relay_frames", "Frames the relay forwarded.")
      .AddCount({}, Load(r.frames_relayed));
  e->Counter("tunnelmesh_operator_relay_bytes", "Payload bytes the relay forwarded.")
      .AddCount({}, Load(r.bytes_relayed));
  Family& drops =
      e->Counter("tunnelmesh_operator_relay_drops", "Frames the relay dropped, by reason.");
  for (const auto& [reason, counter] :
       std::initializer_list<std::pair<const char*, const std::atomic<uint64_t>*>>{
           {"unknown_destination", &r.unknown_destination},
           {"malformed", &r.malformed},
           {"oversized", &r.oversized},
           {"queue_overflow", &r.queue_overflow},
           {"budget_overflow", &r.budget_overflow},
           {"cross_mesh", &r.cross_mesh},
           {"bad_payload", &r.bad_payload},
           {"rate_limited", &r.rate_limited}}) {
    drops.AddCount({{"reason", reason}}, Load(*counter));
  }
  Family& refused = e->Counter("tunnelmesh_operator_relay_refused_connections",
                               "Relay connections closed before a session, by reason.");
  for (const auto& [reason, counter] :
       std::initializer_list<std::pair<const char*, const std::atomic<uint64_t>*>>{
           {"total_cap", &r.refused_total_cap},
           {"source_cap", &r.refused_source_cap},
           {"pending_cap", &r.refused_pending_cap},
           {"plaintext", &r.plaintext_refused},
           {"tls_failed", &r.tls_failures},
           {"bad_upgrade", &r.bad_upgrades},
           {"auth_failed", &r.auth_failures}}) {
    refused.AddCount({{"reason", reason}}, Load(*counter));
  }
}

void AddStun(const StunServer& stun, Exposition* e) {
  const StunServerCounters& s = stun.counters();
  Family& requests =
      e->Counter("tunnelmesh_operator_stun_requests", "STUN datagrams by what became of them.");
  requests.AddCount({{"result", "answered"}}, Load(s.responses));
  requests.AddCount({{"result", "error_response"}}, Load(s.error_responses));
  requests.AddCount({{"result", "malformed"}}, Load(s.malformed));
  requests.AddCount({{"result", "ignored"}}, Load(s.ignored));
}

void AddDns(const CentralDnsServer& dns, Exposition* e) {
  const CentralDnsStats d = dns.stats();
  Family& queries = e->Counter("tunnelmesh_operator_dns_queries",
                               "Queries the central mesh DNS server answered, by transport "
                               "(dns: UDP and TCP; grpc: CoreDNS's DnsService) and outcome.");
  for (int i = 0; i < dns::kOutcomeCount; ++i) {
    const char* outcome = dns::OutcomeName(static_cast<dns::Outcome>(i));
    queries.AddCount({{"transport", "dns"}, {"outcome", outcome}}, d.queries[i]);
    queries.AddCount({{"transport", "grpc"}, {"outcome", outcome}}, d.grpc_queries[i]);
  }
}

void AddControllers(const std::vector<const Controller*>& controllers, Exposition* e) {
  Family& seconds = e->Histogram("tunnelmesh_operator_reconcile_duration_seconds",
                                 "Seconds each reconcile took, by controller (Kubernetes mode).");
  Family& results = e->Counter("tunnelmesh_operator_reconciles",
                               "Reconciles by controller and result (ok, error: retried with "
                               "backoff) (Kubernetes mode).");
  for (const Controller* c : controllers) {
    if (c == nullptr) continue;
    seconds.AddHistogram({{"controller", c->name()}}, c->stats().seconds.Take());
    results.AddCount({{"controller", c->name()}, {"result", "ok"}}, Load(c->stats().succeeded));
    results.AddCount({{"controller", c->name()}, {"result", "error"}}, Load(c->stats().failed));
  }
}

}  // namespace

std::string RenderOperatorMetrics(const OperatorMetricsSources& sources, bool leader,
                                  const std::string& version) {
  Exposition e;
  e.Gauge("tunnelmesh_operator_info", "1, labelled with the operator's version.")
      .AddCount({{"version", version}}, 1);
  e.Gauge("tunnelmesh_operator_leader",
          "1 while this operator leads (always in standalone mode); a standby serves 0.")
      .AddCount({}, leader ? 1 : 0);
  if (sources.coordinator != nullptr) AddCoordinator(*sources.coordinator, &e);
  if (sources.grpc != nullptr) {
    e.Counter("tunnelmesh_operator_grpc_listener_restarts",
              "Times the gRPC listener watchdog restarted a listener that stopped accepting.")
        .AddCount({}, Load(sources.grpc->watchdog_counters().restarts));
  }
  if (sources.relay != nullptr) AddRelay(*sources.relay, &e);
  if (sources.stun != nullptr) AddStun(*sources.stun, &e);
  if (sources.dns != nullptr) AddDns(*sources.dns, &e);
  AddControllers(sources.controllers, &e);
  return e.Text();
}

void OperatorMetrics::SetLeader(bool leader) {
  absl::MutexLock lock(&mu_);
  leader_ = leader;
}

void OperatorMetrics::Attach(OperatorMetricsSources sources) {
  absl::MutexLock lock(&mu_);
  sources_ = std::move(sources);
}

void OperatorMetrics::Detach() {
  absl::MutexLock lock(&mu_);
  sources_ = {};
}

std::string OperatorMetrics::Render() const {
  absl::MutexLock lock(&mu_);
  return RenderOperatorMetrics(sources_, leader_, version_);
}

}  // namespace tunnelmesh
