// RelayClient on cpprestsdk's websocket_callback_client. This file is the one boundary where
// cpprestsdk's exceptions are caught; nothing here lets one escape.
//
// Threads: a worker thread of ours runs the connect/reconnect loop and owns each socket's
// lifetime; cpprestsdk calls the message handler and the TLS certificate check on the socket's own
// I/O thread and the close handler and send continuations on its thread pool. Handlers hold only a
// weak reference to the shared Core, and each carries the number of the attempt it belongs to, so a
// late callback from an old socket changes nothing. Ownership: the Core's setup fields are written
// by the owner before the worker starts and only read afterwards; the attempt's state (phase,
// outcome, ...) is guarded by Core::mu, the current socket by Core::socket_mu (taken after mu when
// both are held); counters and `connected` are atomics any thread reads. No lock is held while a
// socket is destroyed (which waits for cpprestsdk's threads). cpprestsdk otherwise defines a macro
// `U` that breaks fmt (spdlog) and anything else naming U.
#define _TURN_OFF_PLATFORM_STRING
#include "node-agent/transport/relay_client.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <pthread.h>
#include <sodium.h>

#include <exception>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cpprest/containerstream.h"
#include "cpprest/ws_client.h"
#include "lib/base/backoff.h"
#include "lib/base/log.h"
#include "lib/base/retry_log.h"
#include "lib/net/connect_failure.h"
#include "lib/wire/relay_frame.h"
#include "pplx/threadpool.h"

namespace tunnelmesh {

namespace relay = wire::relay;
namespace ws = web::websockets::client;
namespace ssl = boost::asio::ssl;

namespace {

// Where one connection attempt stands.
enum class Phase {
  kConnecting,  // TCP, upgrade, Challenge, Hello: waiting for Ready
  kReady,       // registered; frames flow
  kFailed,      // the attempt failed before Ready
  kClosed,      // a Ready connection ended
};

// How soon to try again after an attempt.
enum class Retry {
  kNormal,     // jittered exponential backoff
  kSlow,       // the slowest backoff: the relay refused us and may change its mind later
  kUntrusted,  // the untrusted backoff: the relay is not the one we expect (certificate or key)
};

struct X509Free {
  void operator()(X509* certificate) const { X509_free(certificate); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

// Every certificate in `pem`, in order; empty when there is none.
std::vector<X509Ptr> ReadCertificates(const std::string& pem) {
  std::vector<X509Ptr> certificates;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return certificates;
  while (X509* certificate = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    certificates.emplace_back(certificate);
  }
  BIO_free(bio);
  ERR_clear_error();  // reading past the last certificate leaves an error behind
  return certificates;
}

// What one attempt's TLS certificate check reports to. Owned by the SSL_CTX that cpprestsdk
// makes for the attempt (ex_data, freed with it), because the context can outlive our handle on
// the socket.
struct RelayTrust {
  std::function<void(const std::string& reason)> on_refused;
};

int RelayTrustIndex() {
  static const int index = SSL_CTX_get_ex_new_index(
      0, nullptr, nullptr, nullptr,
      [](void*, void* trust, CRYPTO_EX_DATA*, int, long, void*) {  // NOLINT(runtime/int)
        delete static_cast<RelayTrust*>(trust);
      });
  return index;
}

// Leaves OpenSSL's verdict on each certificate as it is.
int KeepVerdict(int ok, X509_STORE_CTX*) { return ok; }

// The whole chain check (SSL_CTX_set_cert_verify_callback). cpprestsdk installs a per-certificate
// callback that also matches the leaf against the host in the URL, which is often an IP address;
// the verify parameters set below (the pinned CA as the only trust anchor, kCoordinatorServerName
// as the host) decide instead.
int VerifyRelayChain(X509_STORE_CTX* store, void* arg) {
  X509_STORE_CTX_set_verify_cb(store, &KeepVerdict);
  const int ok = X509_verify_cert(store);
  if (ok != 1 && arg != nullptr) {
    static_cast<RelayTrust*>(arg)->on_refused(
        X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)));
  }
  return ok == 1 ? 1 : 0;
}

// Makes `context` (fresh for one attempt) trust only `ca_pem`'s certificates, require `name` in
// the server's certificate, and report a refused chain through `on_refused`.
void ConfigureTls(SSL_CTX* context, const std::string& ca_pem, const std::string& name,
                  std::function<void(const std::string&)> on_refused) {
  // Replaces the store cpprestsdk filled with the system's CA paths.
  X509_STORE* store = X509_STORE_new();
  if (store == nullptr) return;  // the handshake then fails: no trust anchor at all
  for (const X509Ptr& certificate : ReadCertificates(ca_pem)) {
    X509_STORE_add_cert(store, certificate.get());
  }
  SSL_CTX_set_cert_store(context, store);
  X509_VERIFY_PARAM* param = SSL_CTX_get0_param(context);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  X509_VERIFY_PARAM_set1_host(param, name.data(), name.size());
  auto* trust = new RelayTrust{std::move(on_refused)};
  if (SSL_CTX_set_ex_data(context, RelayTrustIndex(), trust) != 1) {
    delete trust;
    trust = nullptr;  // still verified, only without the log line
  }
  SSL_CTX_set_cert_verify_callback(context, &VerifyRelayChain, trust);
}

// Error text from the relay is untrusted: keep it printable before it reaches logs and statuses.
std::string Printable(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

}  // namespace

struct RelayClient::Core : std::enable_shared_from_this<RelayClient::Core> {
  explicit Core(Options client_options) : options(client_options) {}

  // Set by the owner before the worker starts; read-only afterwards.
  const Options options;
  ReceiveCallback on_receive;
  std::string url;
  web::uri uri;
  SecretKey private_key;
  PublicKey public_key;
  PublicKey server_key;

  RelayClientCounters counters;
  std::atomic<bool> connected{false};
  // Set while the member leaves the mesh: the relay's refusal that follows is expected.
  std::atomic<bool> left{false};
  std::atomic<size_t> in_flight{0};

  absl::Mutex mu;
  bool stopping ABSL_GUARDED_BY(mu) = false;
  uint64_t generation ABSL_GUARDED_BY(mu) = 0;  // the current attempt
  Phase phase ABSL_GUARDED_BY(mu) = Phase::kConnecting;
  bool hello_sent ABSL_GUARDED_BY(mu) = false;
  absl::Status outcome ABSL_GUARDED_BY(mu);  // why the attempt failed
  Retry retry ABSL_GUARDED_BY(mu) = Retry::kNormal;
  std::optional<absl::Status> first_outcome ABSL_GUARDED_BY(mu);  // what Connect() returns

  // Lock order: mu before socket_mu.
  absl::Mutex socket_mu ABSL_ACQUIRED_AFTER(mu);
  std::shared_ptr<ws::websocket_callback_client> socket ABSL_GUARDED_BY(socket_mu);
  bool socket_ready ABSL_GUARDED_BY(socket_mu) = false;  // `socket` got Ready; data may go out

  // Any thread (the owner's destructor): the worker returns as soon as it sees this.
  void Stop() ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    stopping = true;
  }

  // The owner's thread, in Connect(): waits for the first attempt's outcome.
  absl::Status AwaitFirstOutcome() ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    auto decided = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return first_outcome.has_value(); };
    mu.Await(absl::Condition(&decided));
    return *first_outcome;
  }

  // The worker thread: attempts and waits until told to stop.
  void Run() ABSL_LOCKS_EXCLUDED(mu, socket_mu) {
    const uint64_t seed = options.jitter_seed != 0 ? options.jitter_seed : std::random_device{}();
    Backoff backoff(options.initial_backoff, options.max_backoff, seed);
    Backoff untrusted_backoff(options.untrusted_initial_backoff, options.untrusted_max_backoff,
                              seed + 1);
    // Reconnects stay fast; the log gets an outage's first failure, summaries at growing
    // spacing, and the reconnection (OnReady's line).
    RetryLog retry_log(seed + 2);
    bool first = true;
    while (true) {
      {
        absl::MutexLock lock(&mu);
        if (stopping) return;
      }
      bool was_ready = false;
      absl::Status status;
      const Retry next = RunAttempt(first, &was_ready, &status);
      first = false;
      {
        absl::MutexLock lock(&mu);
        if (stopping) return;
      }
      if (was_ready) {
        backoff.Reset();
        untrusted_backoff.Reset();
        retry_log.OnSuccess(absl::Now());
      }
      std::chrono::milliseconds delay;
      if (next == Retry::kUntrusted) {
        // Loud every time: someone may be posing as the relay to drop what members relay.
        delay = untrusted_backoff.Next();
        TM_LOG_WARN("relay not used: {}; retrying in {} ms", std::string(status.message()),
                    delay.count());
      } else {
        delay = next == Retry::kSlow ? backoff.max() : backoff.Next();
        const RetryLog::Say say = retry_log.OnFailure(absl::Now());
        if (left.load(std::memory_order_acquire)) {
          TM_LOG_DEBUG("relay closed after this member left the mesh: {}",
                       std::string(status.message()));
        } else if (say == RetryLog::Say::kFirst) {
          TM_LOG_WARN("relay {}: {}; reconnecting (peers with a direct path are not affected)",
                      was_ready ? "connection lost" : "not reachable", Describe(status));
        } else if (say == RetryLog::Say::kSummary) {
          TM_LOG_WARN("still cannot reach the relay after {} attempts over {}: {}",
                      retry_log.attempts(), FormatOutageDuration(retry_log.elapsed(absl::Now())),
                      Describe(status));
        } else {
          TM_LOG_DEBUG("relay reconnect failed url={} delay_ms={} reason={}", url, delay.count(),
                       std::string(status.message()));
        }
      }
      absl::MutexLock lock(&mu);
      auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return stopping; };
      if (mu.AwaitWithTimeout(absl::Condition(&stopped), absl::FromChrono(delay))) return;
    }
  }

  // A failed attempt's cause for a log line. A failure to connect is put in plain words (connection
  // refused, timed out, ...), found by a TCP probe of the relay's address when the WebSocket
  // library's text does not say (it reports "Underlying Transport Error" for all of them).
  // Worker thread; the probe blocks it for at most 2 s, only when a line is logged.
  std::string Describe(const absl::Status& status) {
    const std::string text(status.message());
    if (status.code() != absl::StatusCode::kUnavailable) return text;
    const std::string host = utility::conversions::to_utf8string(uri.host());
    const int port = uri.port() > 0 ? uri.port() : 443;
    const std::string where = host.find(':') != std::string::npos
                                  ? "[" + host + "]:" + std::to_string(port)
                                  : host + ":" + std::to_string(port);
    std::optional<std::string> cause = ConnectFailureFromText(text);
    if (!cause && absl::StrContains(text, "cannot connect to relay")) {
      cause = ProbeTcpConnect(host, static_cast<uint16_t>(port), absl::Seconds(2));
      if (!cause) {
        return "cannot connect to the relay at " + where +
               ": TCP connects, but the TLS or WebSocket handshake failed";
      }
    }
    if (cause) return "cannot reach the relay at " + where + " (" + *cause + ")";
    return text;
  }

  // One connection from start to end. Returns how to retry; `status` says why it ended.
  // Worker thread.
  Retry RunAttempt(bool first, bool* was_ready, absl::Status* status)
      ABSL_LOCKS_EXCLUDED(mu, socket_mu) {
    counters.connect_attempts.fetch_add(1, std::memory_order_relaxed);
    uint64_t attempt;
    {
      absl::MutexLock lock(&mu);
      attempt = ++generation;
      phase = Phase::kConnecting;
      hello_sent = false;
      outcome = absl::OkStatus();
      retry = Retry::kNormal;
    }
    StartSocket(attempt);

    Retry next;
    {
      absl::MutexLock lock(&mu);
      auto decided_fn = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return stopping || phase != Phase::kConnecting;
      };
      const bool decided = mu.AwaitWithTimeout(absl::Condition(&decided_fn),
                                               absl::FromChrono(options.connect_timeout));
      if (phase == Phase::kConnecting) {
        phase = Phase::kFailed;
        outcome = decided ? absl::CancelledError("relay client is shutting down")
                          : absl::UnavailableError("relay " + url + " did not register us within " +
                                                   std::to_string(options.connect_timeout.count()) +
                                                   " ms");
      }
      *was_ready = phase == Phase::kReady;
      if (first) first_outcome = *was_ready ? absl::OkStatus() : outcome;
      auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return stopping || phase != Phase::kReady;
      };
      if (*was_ready) mu.Await(absl::Condition(&ended));
      if (outcome.ok()) outcome = absl::UnavailableError("relay " + url + " closed the connection");
      *status = outcome;
      next = retry;
      ++generation;  // callbacks still in flight for this socket are now stale
      connected.store(false, std::memory_order_release);
    }
    StopSocket();
    return next;
  }

  void StartSocket(uint64_t attempt) ABSL_LOCKS_EXCLUDED(mu, socket_mu) {
    std::weak_ptr<Core> weak = weak_from_this();
    try {
      ws::websocket_client_config config;
      // SNI names the certificate we want rather than the address we dial.
      config.set_server_name(options.server_name);
      config.set_ssl_context_callback([weak, attempt, ca_pem = options.trusted_ca_pem,
                                       name = options.server_name](ssl::context& context) {
        ConfigureTls(context.native_handle(), ca_pem, name,
                     [weak, attempt](const std::string& why) {
                       if (std::shared_ptr<Core> core = weak.lock())
                         core->RefuseCertificate(attempt, why);
                     });
      });
      auto client = std::make_shared<ws::websocket_callback_client>(config);
      client->set_message_handler([weak, attempt](const ws::websocket_incoming_message& message) {
        if (std::shared_ptr<Core> core = weak.lock()) core->OnMessage(attempt, message);
      });
      client->set_close_handler([weak, attempt](ws::websocket_close_status,
                                                const utility::string_t&,
                                                const std::error_code& error) {
        if (std::shared_ptr<Core> core = weak.lock()) core->OnClose(attempt, error);
      });
      {
        absl::MutexLock lock(&socket_mu);
        socket = client;
        socket_ready = false;
      }
      client->connect(uri).then([weak, attempt](pplx::task<void> done) {
        try {
          done.get();
        } catch (const std::exception& e) {
          if (std::shared_ptr<Core> core = weak.lock()) {
            core->Fail(attempt, absl::UnavailableError("cannot connect to relay " + core->url +
                                                       ": " + e.what()));
          }
        } catch (...) {
          if (std::shared_ptr<Core> core = weak.lock()) {
            core->Fail(attempt, absl::UnavailableError("cannot connect to relay " + core->url));
          }
        }
      });
    } catch (const std::exception& e) {
      Fail(attempt, absl::UnavailableError("cannot connect to relay " + url + ": " + e.what()));
    }
  }

  // Begins closing the socket and drops it. Its destructor (cpprestsdk's) waits for a connect in
  // progress to end and for the close handshake, both bounded by the library's own timeouts.
  void StopSocket() ABSL_LOCKS_EXCLUDED(mu, socket_mu) {
    std::shared_ptr<ws::websocket_callback_client> client;
    {
      absl::MutexLock lock(&socket_mu);
      client = std::move(socket);
      socket_ready = false;
    }
    if (!client) return;
    try {
      client->close().then([](pplx::task<void> closed) {
        try {
          closed.get();
        } catch (...) {
        }
      });
    } catch (...) {
    }
    client.reset();
  }

  // Marks the current attempt failed (before Ready) with `status`, unless something else already
  // decided it.
  void Fail(uint64_t attempt, absl::Status status, Retry how = Retry::kNormal)
      ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    if (attempt != generation || phase != Phase::kConnecting) return;
    phase = Phase::kFailed;
    if (outcome.ok()) outcome = std::move(status);
    retry = how;
  }

  // The socket's I/O thread, during the TLS handshake: the relay's chain failed the check.
  void RefuseCertificate(uint64_t attempt, const std::string& reason) ABSL_LOCKS_EXCLUDED(mu) {
    counters.certificate_refused.fetch_add(1, std::memory_order_relaxed);
    Fail(attempt,
         absl::FailedPreconditionError(
             "relay " + url +
             " presents a TLS certificate that the pinned coordinator CA did not "
             "issue for " +
             options.server_name + " (" + reason +
             "): something other than the coordinator answers at that address (check what "
             "intercepts its TCP port, or whether the coordinator's CA changed)"),
         Retry::kUntrusted);
  }

  // cpprestsdk's thread pool.
  void OnClose(uint64_t attempt, const std::error_code& error) ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    if (attempt != generation) return;
    connected.store(false, std::memory_order_release);
    if (phase == Phase::kConnecting) {
      phase = Phase::kFailed;
      if (outcome.ok()) {
        const std::string detail = error ? ": " + error.message() : std::string();
        outcome = absl::UnavailableError(
            hello_sent ? "relay " + url + " closed the connection before Ready" + detail
                       : "cannot connect to relay " + url + detail);
      }
    } else if (phase == Phase::kReady) {
      phase = Phase::kClosed;
    }
  }

  // On the socket's I/O thread, one message at a time.
  void OnMessage(uint64_t attempt, const ws::websocket_incoming_message& message)
      ABSL_LOCKS_EXCLUDED(mu, socket_mu) {
    try {
      if (message.message_type() != ws::websocket_message_type::binary_message) {
        counters.malformed.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      // The body is an in-memory buffer: borrow its bytes instead of copying them.
      concurrency::streams::streambuf<uint8_t> body = message.body().streambuf();
      uint8_t* data = nullptr;
      size_t size = 0;
      if (body.acquire(data, size) && (data != nullptr || message.length() == 0)) {
        HandleFrame(attempt, relay::Bytes(data, size));
        body.release(data, 0);
        return;
      }
      std::vector<uint8_t> copy(message.length());
      size = body.scopy(copy.data(), copy.size());
      HandleFrame(attempt, relay::Bytes(copy.data(), size));
    } catch (const std::exception& e) {
      counters.malformed.fetch_add(1, std::memory_order_relaxed);
      TM_LOG_DEBUG("relay message unreadable: {}", e.what());
    }
  }

  void HandleFrame(uint64_t attempt, relay::Bytes frame) ABSL_LOCKS_EXCLUDED(mu, socket_mu) {
    const std::optional<relay::FrameType> type = relay::Classify(frame);
    if (!type) {
      counters.malformed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    switch (*type) {
      case relay::FrameType::kDeliver: {
        relay::Deliver deliver;
        if (!relay::Parse(frame, &deliver)) {
          counters.malformed.fetch_add(1, std::memory_order_relaxed);
          return;
        }
        counters.frames_received.fetch_add(1, std::memory_order_relaxed);
        counters.bytes_received.fetch_add(deliver.payload.size(), std::memory_order_relaxed);
        if (on_receive) on_receive(PublicKey{deliver.source}, deliver.payload);
        return;
      }
      case relay::FrameType::kChallenge: {
        relay::Challenge challenge;
        if (relay::Parse(frame, &challenge)) OnChallenge(attempt, challenge);
        return;
      }
      case relay::FrameType::kReady:
        OnReady(attempt);
        return;
      case relay::FrameType::kError: {
        relay::Error error;
        if (relay::Parse(frame, &error)) OnRelayError(attempt, error);
        return;
      }
      case relay::FrameType::kHello:
      case relay::FrameType::kSend:
        break;
    }
    counters.malformed.fetch_add(1, std::memory_order_relaxed);  // client-to-server frames
  }

  void OnChallenge(uint64_t attempt, const relay::Challenge& challenge)
      ABSL_LOCKS_EXCLUDED(mu, socket_mu) {
    {
      absl::MutexLock lock(&mu);
      if (attempt != generation || phase != Phase::kConnecting || hello_sent) {
        counters.malformed.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      hello_sent = true;
    }
    if (challenge.server_key != server_key.bytes) {
      counters.server_key_mismatch.fetch_add(1, std::memory_order_relaxed);
      Fail(attempt,
           absl::FailedPreconditionError("relay " + url + " presents key " +
                                         PublicKey{challenge.server_key}.Short() +
                                         " but the network map names " + server_key.Short() +
                                         ": the relay URL or the network map is stale, or "
                                         "something poses as the relay"),
           Retry::kUntrusted);
      return;
    }
    // The proof: the challenge's random bytes boxed from our key to the relay's (crypto_box is
    // X25519 + XSalsa20-Poly1305); only the holder of our private key can make it.
    relay::Hello hello;
    hello.client_key = public_key.bytes;
    if (crypto_box_easy(hello.proof.data(), challenge.random.data(), challenge.random.size(),
                        challenge.nonce.data(), challenge.server_key.data(),
                        private_key.data()) != 0) {
      Fail(attempt,
           absl::FailedPreconditionError("relay " + url + " presents an unusable key " +
                                         server_key.Short()),
           Retry::kUntrusted);
      return;
    }
    std::vector<uint8_t> frame;
    relay::Serialize(hello, &frame);
    if (!Post(std::move(frame), 0, /*data=*/false)) {
      Fail(attempt,
           absl::UnavailableError("relay " + url + " connection lost during the handshake"));
    }
  }

  void OnReady(uint64_t attempt) ABSL_LOCKS_EXCLUDED(mu, socket_mu) {
    absl::MutexLock lock(&mu);
    if (attempt != generation || phase != Phase::kConnecting || !hello_sent) {
      counters.malformed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    phase = Phase::kReady;
    {
      absl::MutexLock socket_lock(&socket_mu);
      socket_ready = true;
    }
    connected.store(true, std::memory_order_release);
    counters.sessions.fetch_add(1, std::memory_order_relaxed);
    TM_LOG_INFO("relay connected url={} relay_key={} our_key={}", url, server_key.Short(),
                public_key.Short());
  }

  void OnRelayError(uint64_t attempt, const relay::Error& error) ABSL_LOCKS_EXCLUDED(mu) {
    const std::string text = Printable(error.text);
    const std::string name(relay::ErrorCodeName(error.code));
    absl::Status status;
    Retry how = Retry::kNormal;
    switch (error.code) {
      case relay::ErrorCode::kNotMember:
      case relay::ErrorCode::kAuthFailed:
        counters.refused.fetch_add(1, std::memory_order_relaxed);
        status = absl::PermissionDeniedError("relay " + url + " refused key " + public_key.Short() +
                                             " (" + name + "): " + text);
        how = Retry::kSlow;
        break;
      case relay::ErrorCode::kReplaced:
        status = absl::UnavailableError(
            "relay " + url + " closed this connection because a newer one uses key " +
            public_key.Short() + ": is another agent running with the same node key?");
        how = Retry::kSlow;
        break;
      default:
        status = absl::UnavailableError("relay " + url + " closed the connection (" + name +
                                        "): " + text);
        break;
    }
    absl::MutexLock lock(&mu);
    if (attempt != generation) return;
    if (outcome.ok()) outcome = status;
    retry = how;
    if (phase == Phase::kConnecting) phase = Phase::kFailed;
  }

  // Hands one binary message to the current socket; false when there is none. `data` messages
  // count against max_in_flight (already incremented by the caller) until the library is done.
  // Any thread (the sender's, or the I/O thread for the Hello).
  bool Post(std::vector<uint8_t> frame, size_t payload_size, bool data)
      ABSL_LOCKS_EXCLUDED(socket_mu) {
    const size_t size = frame.size();
    ws::websocket_outgoing_message message;
    concurrency::streams::container_buffer<std::vector<uint8_t>> buffer(std::move(frame),
                                                                        std::ios_base::in);
    message.set_binary_message(buffer.create_istream(), size);
    pplx::task<void> sent;
    {
      absl::MutexLock lock(&socket_mu);
      // Data waits for Ready; a Send racing with a reconnect must not precede the Hello.
      if (!socket || (data && !socket_ready)) return false;
      sent = socket->send(message);
    }
    std::weak_ptr<Core> weak = weak_from_this();
    sent.then([weak, payload_size, data](pplx::task<void> done) {
      std::shared_ptr<Core> core = weak.lock();
      bool ok = true;
      try {
        done.get();
      } catch (...) {
        ok = false;
      }
      if (!core) return;
      if (!ok) {
        core->counters.send_failures.fetch_add(1, std::memory_order_relaxed);
      } else if (data) {
        core->counters.frames_sent.fetch_add(1, std::memory_order_relaxed);
        core->counters.bytes_sent.fetch_add(payload_size, std::memory_order_relaxed);
      }
      if (data) core->in_flight.fetch_sub(1, std::memory_order_acq_rel);
    });
    return true;
  }
};

RelayClient::RelayClient() : RelayClient(Options()) {}

RelayClient::RelayClient(Options options) : core_(std::make_shared<Core>(options)) {}

RelayClient::~RelayClient() {
  core_->Stop();
  if (worker_.joinable()) worker_.join();
}

void RelayClient::SetReceiveCallback(ReceiveCallback callback) {
  if (worker_.joinable()) {
    TM_LOG_WARN("relay client: receive callback set after Connect(), ignored");
    return;
  }
  core_->on_receive = std::move(callback);
}

absl::Status RelayClient::Connect(std::string_view url, const SecretKey& private_key,
                                  const PublicKey& public_key, const PublicKey& server_key) {
  if (worker_.joinable()) {
    return absl::FailedPreconditionError(
        "relay client already connected; use a new RelayClient for another relay");
  }
  if (DerivePublicKey(private_key) != public_key) {
    return absl::InvalidArgumentError("relay client: public key " + public_key.Short() +
                                      " does not belong to the private key given");
  }
  const std::string url_text(url);
  try {
    web::uri uri(utility::conversions::to_string_t(url_text));
    const std::string scheme = utility::conversions::to_utf8string(uri.scheme());
    if (scheme == "ws") {
      return absl::InvalidArgumentError(
          "relay URL \"" + url_text +
          "\" is plain ws://, which this agent does not use: the coordinator is older than the "
          "agent; upgrade tunnelmesh-operator (its relay serves wss://)");
    }
    if (scheme != "wss" || uri.host().empty()) {
      return absl::InvalidArgumentError("relay URL \"" + url_text +
                                        "\" is not wss://HOST:PORT/PATH");
    }
    core_->uri = uri;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError("relay URL \"" + url_text + "\" is not a URL: " + e.what());
  }
  if (ReadCertificates(core_->options.trusted_ca_pem).empty()) {
    return absl::InvalidArgumentError(
        "relay client: no CA certificate to check the relay with (the coordinator's pinned CA, "
        "PEM)");
  }
  core_->url = url_text;
  core_->private_key = private_key.Clone();
  core_->public_key = public_key;
  core_->server_key = server_key;
  worker_ = std::thread([core = core_] {
    pthread_setname_np(pthread_self(), "tm-relay-cli");
    core->Run();
  });
  return core_->AwaitFirstOutcome();
}

bool RelayClient::Send(const PublicKey& destination, absl::Span<const uint8_t> payload) {
  Core& core = *core_;
  if (payload.empty() || payload.size() > relay::kMaxPayloadSize) {
    core.counters.dropped_invalid.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  if (!core.connected.load(std::memory_order_acquire)) {
    core.counters.dropped_disconnected.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  if (core.in_flight.fetch_add(1, std::memory_order_acq_rel) >= core.options.max_in_flight) {
    core.in_flight.fetch_sub(1, std::memory_order_acq_rel);
    core.counters.dropped_queue_full.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  try {
    std::vector<uint8_t> frame;
    if (relay::Serialize(relay::Send{destination.bytes, payload}, &frame) &&
        core.Post(std::move(frame), payload.size(), /*data=*/true)) {
      return true;
    }
    core.counters.dropped_disconnected.fetch_add(1, std::memory_order_relaxed);
  } catch (const std::exception&) {
    core.counters.send_failures.fetch_add(1, std::memory_order_relaxed);
  }
  core.in_flight.fetch_sub(1, std::memory_order_acq_rel);
  return false;
}

void RelayClient::SetLeaving(bool leaving) {
  core_->left.store(leaving, std::memory_order_release);
}

bool RelayClient::connected() const { return core_->connected.load(std::memory_order_acquire); }

const RelayClientCounters& RelayClient::counters() const { return core_->counters; }

bool InitCpprestThreadPool(size_t threads) {
  try {
    crossplat::threadpool::initialize_with_threads(threads);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace tunnelmesh
