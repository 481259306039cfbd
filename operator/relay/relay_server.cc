// Boost.Beast transport of the relay: accepts TCP (or closes it at once when a connection cap is
// reached), tells TLS from plain HTTP, does the TLS handshake with the coordinator's certificate,
// upgrades to WebSocket on the configured path, and moves whole binary messages between sockets
// and the RelayHub. Everything here runs on the server's single I/O thread, so sessions, the caps'
// bookkeeping and the hub need no locks.
// Beast with g++ 12 needs <utility> before its own headers, so it stays first
// (the format check would sort it after relay_server.h).
// clang-format off
#include <utility>
// clang-format on

#include "operator/relay/relay_server.h"

#include <pthread.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/core/detect_ssl.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <deque>
#include <exception>
#include <optional>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "lib/base/log.h"
#include "lib/wire/relay_frame.h"

namespace tunnelmesh {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

// How long a connection the hub asked to close may take to flush and finish the close handshake.
constexpr std::chrono::seconds kCloseGrace{2};
// Read granularity; a frame is assembled from as many reads as it takes.
constexpr size_t kReadChunk = 8192;
// Pause before accepting again after an accept error (such as running out of descriptors).
constexpr std::chrono::milliseconds kAcceptRetry{50};
// Refused connections are logged at most this often (they are counted every time).
constexpr std::chrono::seconds kRefusalLogInterval{10};

// What a client that speaks plain HTTP to this TLS-only port reads (an agent from before the
// relay used TLS dials ws://).
constexpr char kPlaintextBody[] =
    "This TunnelMesh relay speaks TLS only (wss://). Upgrade tunnelmesh-agent to the "
    "coordinator's version.\n";

class Session;

// State the sessions share with the server; touched only on the I/O thread (the caps are set by
// Listen before the thread starts).
struct ServerContext {
  ServerContext(const SecretKey& key, RelayHub::MembershipCheck is_member,
                RelayServer::Options server_options)
      : hub(key, std::move(is_member), nullptr, server_options.limits, server_options.clock),
        options(std::move(server_options)),
        max_connections(options.max_connections),
        max_connections_per_source(options.max_connections_per_source),
        max_pending_connections(options.max_pending_connections) {}

  RelayHub hub;
  const RelayServer::Options options;
  ssl::context tls{ssl::context::tls_server};
  // The caps in force: the options', lowered to fit the descriptor limit.
  size_t max_connections;
  size_t max_connections_per_source;
  size_t max_pending_connections;
  // Every live session, so that shutdown can close them and the total cap can count them. The
  // sessions own themselves through the handlers of their pending operations.
  absl::flat_hash_map<Session*, std::weak_ptr<Session>> sessions;
  // Live sessions per source address (its text form; only accepts pay for the string).
  absl::flat_hash_map<std::string, size_t> per_source;
  size_t pending = 0;       // sessions not yet authenticated
  size_t queued_bytes = 0;  // Deliver bytes in all outbound queues
  MonoTime last_refusal_log;
  uint64_t unlogged_refusals = 0;
};

// One TCP connection: HTTP upgrade, then WebSocket messages to and from the hub.
class Session final : public RelayConnection, public std::enable_shared_from_this<Session> {
 public:
  // Counts itself as pending and against `source`'s cap until it authenticates or finishes.
  Session(ServerContext* context, tcp::socket socket, std::string source)
      : context_(context),
        source_(std::move(source)),
        ws_(std::move(socket), context->tls),
        deadline_(ws_.get_executor()) {
    ++context_->pending;
    ++context_->per_source[source_];
  }

  void Start() {
    // One deadline covers TLS, the upgrade and the Hello; AuthDeadline() ignores a connection
    // that authenticated in time.
    ArmDeadline(context_->options.auth_timeout);
    beast::get_lowest_layer(ws_).expires_after(context_->options.auth_timeout);
    beast::async_detect_ssl(beast::get_lowest_layer(ws_), http_buffer_,
                            [self = shared_from_this()](beast::error_code ec, bool is_tls) {
                              self->OnDetected(ec, is_tls);
                            });
  }

  // Server shutdown: drop the connection now; the I/O loop stops right after.
  void Abort() { CloseSocket(); }

  SendResult Send(std::vector<uint8_t> frame, bool droppable) override {
    if (finished_ || close_sent_) return droppable ? SendResult::kQueueFull : SendResult::kQueued;
    if (droppable) {
      if (queued_droppable_ >= context_->options.max_queued_frames) return SendResult::kQueueFull;
      if (context_->queued_bytes + frame.size() > context_->options.max_queued_bytes) {
        return SendResult::kOverBudget;
      }
      ++queued_droppable_;
      queued_bytes_ += frame.size();
      context_->queued_bytes += frame.size();
    }
    queue_.push_back(Outgoing{std::move(frame), droppable});
    if (!writing_) Write();
    return SendResult::kQueued;
  }

  void Authenticated() override {
    if (!pending_) return;
    pending_ = false;
    --context_->pending;
  }

  void Close() override {
    if (closing_ || finished_) return;
    closing_ = true;
    ArmDeadline(kCloseGrace);
    MaybeSendClose();
  }

 private:
  struct Outgoing {
    std::vector<uint8_t> bytes;
    bool droppable;
  };

  void ArmDeadline(std::chrono::steady_clock::duration after) {
    deadline_.expires_after(after);
    deadline_.async_wait(
        [self = shared_from_this()](beast::error_code ec) { self->OnDeadline(ec); });
  }

  void OnDeadline(beast::error_code ec) {
    // A handler already queued when the timer was re-armed sees a later expiry: not ours.
    if (ec || finished_ || deadline_.expiry() > std::chrono::steady_clock::now()) return;
    if (!opened_ || closing_) {
      CloseSocket();  // the pending operation fails and finishes the session
      return;
    }
    context_->hub.AuthDeadline(this);
  }

  void OnDetected(beast::error_code ec, bool is_tls) {
    if (ec) {
      FailUpgrade();
      return;
    }
    if (!is_tls) {
      RefusePlaintext();
      return;
    }
    // The bytes detection read are the start of the ClientHello: the handshake consumes them.
    ws_.next_layer().async_handshake(
        ssl::stream_base::server, http_buffer_.data(),
        [self = shared_from_this()](beast::error_code handshake_ec, size_t used) {
          self->OnHandshake(handshake_ec, used);
        });
  }

  void OnHandshake(beast::error_code ec, size_t used) {
    if (ec) {
      if (!finished_) context_->hub.TlsFailed();
      TM_LOG_DEBUG("relay TLS handshake failed source={} error={}", source_, ec.message());
      Finish();
      return;
    }
    http_buffer_.consume(used);
    parser_.emplace();
    parser_->header_limit(8192);
    parser_->body_limit(0);
    http::async_read(ws_.next_layer(), http_buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code read_ec, size_t) {
                       self->OnRequest(read_ec);
                     });
  }

  // Plain HTTP on the TLS port: say why in plain HTTP, then close.
  void RefusePlaintext() {
    context_->hub.PlaintextRefused();
    TM_LOG_DEBUG("relay refused plain HTTP (ws://) source={}: the relay speaks wss:// only",
                 source_);
    plaintext_reply_ =
        std::string("HTTP/1.1 426 Upgrade Required\r\nServer: tunnelmesh-relay\r\n") +
        "Connection: close\r\nContent-Type: text/plain\r\nContent-Length: " +
        std::to_string(sizeof(kPlaintextBody) - 1) + "\r\n\r\n" + kPlaintextBody;
    net::async_write(beast::get_lowest_layer(ws_), net::buffer(plaintext_reply_),
                     [self = shared_from_this()](beast::error_code, size_t) { self->Finish(); });
  }

  void OnRequest(beast::error_code ec) {
    if (ec) {
      FailUpgrade();
      return;
    }
    const http::request<http::empty_body>& request = parser_->get();
    if (request.target() != context_->options.path) {
      refusal_.emplace(http::status::not_found, request.version());
      refusal_->set(http::field::server, "tunnelmesh-relay");
      refusal_->keep_alive(false);
      refusal_->prepare_payload();
      http::async_write(
          ws_.next_layer(), *refusal_,
          [self = shared_from_this()](beast::error_code, size_t) { self->FailUpgrade(); });
      return;
    }
    // The WebSocket layer keeps its own timers from here on (Beast wants the TCP ones off).
    beast::get_lowest_layer(ws_).expires_never();
    const auto auth_timeout = context_->options.auth_timeout;
    ws_.set_option(websocket::stream_base::timeout{auth_timeout, context_->options.idle_timeout,
                                                   /*keep_alive_pings=*/true});
    ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& response) {
      response.set(http::field::server, "tunnelmesh-relay");
    }));
    ws_.read_message_max(context_->options.max_message_size);
    ws_.auto_fragment(false);
    ws_.binary(true);
    // A request that is not a WebSocket upgrade gets Beast's 400 response and an error here.
    ws_.async_accept(request, [self = shared_from_this()](beast::error_code accept_ec) {
      self->OnAccepted(accept_ec);
    });
  }

  void OnAccepted(beast::error_code ec) {
    if (ec) {
      FailUpgrade();
      return;
    }
    opened_ = true;
    context_->hub.Opened(this);
    Read();
  }

  void FailUpgrade() {
    context_->hub.BadUpgrade();
    Finish();
  }

  void Read() {
    ws_.async_read_some(net::buffer(chunk_),
                        [self = shared_from_this()](beast::error_code ec, size_t bytes) {
                          self->OnRead(ec, bytes);
                        });
  }

  void OnRead(beast::error_code ec, size_t bytes) {
    if (ec) {
      if (ec == websocket::error::message_too_big && !finished_) {
        context_->hub.ReceivedOversized(this);
      }
      Finish();
      return;
    }
    if (!oversized_) {
      if (message_.size() + bytes > wire::relay::kMaxFrameSize) {
        // Too long to be a frame: read the rest and drop it, keeping the connection.
        oversized_ = true;
        message_.clear();
      } else {
        message_.insert(message_.end(), chunk_.begin(), chunk_.begin() + bytes);
      }
    }
    if (ws_.is_message_done()) {
      if (oversized_) {
        context_->hub.ReceivedOversized(this);
      } else if (ws_.got_text()) {
        context_->hub.ReceivedText(this);
      } else {
        context_->hub.Received(this, std::move(message_));
      }
      message_ = std::vector<uint8_t>();
      oversized_ = false;
    }
    if (!finished_) Read();
  }

  void Write() {
    writing_ = true;
    ws_.async_write(
        net::buffer(queue_.front().bytes),
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnWrite(ec); });
  }

  void OnWrite(beast::error_code ec) {
    writing_ = false;
    if (finished_) return;
    if (ec) {
      CloseSocket();  // the pending read fails and finishes the session
      return;
    }
    if (queue_.front().droppable) {
      --queued_droppable_;
      queued_bytes_ -= queue_.front().bytes.size();
      context_->queued_bytes -= queue_.front().bytes.size();
    }
    queue_.pop_front();
    if (!queue_.empty()) {
      Write();
    } else {
      MaybeSendClose();
    }
  }

  // Starts the WebSocket close handshake once everything queued is written. The read loop then
  // ends with the peer's close (or the close deadline) and finishes the session.
  void MaybeSendClose() {
    if (!closing_ || close_sent_ || writing_ || !queue_.empty() || finished_) return;
    close_sent_ = true;
    ws_.async_close(websocket::close_code::policy_error,
                    [self = shared_from_this()](beast::error_code ec) {
                      if (ec) self->CloseSocket();
                    });
  }

  void CloseSocket() {
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(ws_).close();
  }

  // Called once, when the connection is over; after it the hub never hears of this session.
  void Finish() {
    if (finished_) return;
    finished_ = true;
    deadline_.cancel();
    CloseSocket();
    if (opened_) context_->hub.Closed(this);
    // What it still had queued leaves the relay-wide budget; the frames die with the session.
    context_->queued_bytes -= queued_bytes_;
    queued_bytes_ = 0;
    Authenticated();  // no longer pending either way
    if (auto it = context_->per_source.find(source_);
        it != context_->per_source.end() && --it->second == 0) {
      context_->per_source.erase(it);
    }
    context_->sessions.erase(this);
  }

  ServerContext* const context_;
  const std::string source_;
  websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws_;
  net::steady_timer deadline_;
  beast::flat_buffer http_buffer_;
  std::optional<http::request_parser<http::empty_body>> parser_;
  std::optional<http::response<http::empty_body>> refusal_;
  std::string plaintext_reply_;
  std::array<uint8_t, kReadChunk> chunk_;
  std::vector<uint8_t> message_;
  bool oversized_ = false;
  std::deque<Outgoing> queue_;
  size_t queued_droppable_ = 0;
  size_t queued_bytes_ = 0;  // of the droppable frames in queue_
  bool pending_ = true;      // not yet authenticated
  bool opened_ = false;      // the hub knows this connection
  bool writing_ = false;
  bool closing_ = false;  // the hub asked to close
  bool close_sent_ = false;
  bool finished_ = false;
};

}  // namespace

class RelayServer::Impl {
 public:
  Impl(const SecretKey& private_key, const TlsIdentity& tls, MembershipCheck is_member,
       Options options)
      : context_(private_key, std::move(is_member), std::move(options)), tls_(tls) {}

  ~Impl() {
    if (!thread_.joinable()) return;
    net::post(ioc_, [this] {
      beast::error_code ignored;
      acceptor_.close(ignored);
      accept_retry_.cancel();
      for (auto& [session, weak] : context_.sessions) {
        if (std::shared_ptr<Session> live = weak.lock()) live->Abort();
      }
      // Handlers still queued are destroyed with the io_context, and the sessions with them.
      ioc_.stop();
    });
    thread_.join();
  }

  void Revoke(const PublicKey& key) {
    net::post(ioc_, [this, key] { context_.hub.Revoke(key); });
  }
  void Rescope(const PublicKey& key) {
    net::post(ioc_, [this, key] { context_.hub.Rescope(key); });
  }

  absl::Status Listen(int port) {
    if (port < 0 || port > 65535) {
      return absl::InvalidArgumentError("--relay-port " + std::to_string(port) +
                                        " is not a port number (0-65535)");
    }
    if (thread_.joinable()) return absl::FailedPreconditionError("the relay is already listening");
    if (absl::Status status = LoadTls(); !status.ok()) return status;
    FitCapsToDescriptorLimit();
    const std::string& address_text = context_.options.listen_address;
    beast::error_code ec;
    net::ip::address address = net::ip::make_address(address_text, ec);
    if (ec) {
      return absl::InvalidArgumentError("relay listen address \"" + address_text +
                                        "\" is not an IP address");
    }
    const tcp::endpoint endpoint(address, static_cast<uint16_t>(port));
    const std::string where = address_text + " port " + std::to_string(port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (ec) {
      beast::error_code ignored;
      acceptor_.close(ignored);
      if (ec == net::error::address_in_use) {
        return absl::FailedPreconditionError("relay " + where +
                                             " is already in use: stop what holds it or choose "
                                             "another port with --relay-port");
      }
      if (ec == net::error::access_denied) {
        return absl::PermissionDeniedError("relay " + where +
                                           " needs privileges: choose a port above 1023 with "
                                           "--relay-port");
      }
      return absl::UnavailableError("relay cannot bind " + where + ": " + ec.message());
    }
    acceptor_.listen(net::socket_base::max_listen_connections, ec);
    tcp::endpoint bound;
    if (!ec) bound = acceptor_.local_endpoint(ec);
    if (ec) {
      beast::error_code ignored;
      acceptor_.close(ignored);
      return absl::UnavailableError("relay cannot listen on " + where + ": " + ec.message());
    }
    port_.store(bound.port(), std::memory_order_release);
    Accept();
    thread_ = std::thread([this] { Run(); });
    TM_LOG_INFO(
        "relay listening (wss) address={} port={} path={} key={} max_connections={} "
        "per_source={} pending={}",
        address_text, bound.port(), context_.options.path, context_.hub.public_key().Short(),
        context_.max_connections, context_.max_connections_per_source,
        context_.max_pending_connections);
    return absl::OkStatus();
  }

  uint16_t port() const { return port_.load(std::memory_order_acquire); }
  const RelayHub& hub() const { return context_.hub; }

 private:
  // The one boundary where exceptions from Asio or Beast could surface; none are expected, since
  // every call above uses error codes.
  void Run() {
    pthread_setname_np(pthread_self(), "tm-relay");
    try {
      ioc_.run();
    } catch (const std::exception& e) {
      TM_LOG_ERROR("relay I/O thread stopped: {}", e.what());
    }
  }

  // The coordinator's certificate chain and key; the relay refuses anything older than TLS 1.2.
  absl::Status LoadTls() {
    beast::error_code ec;
    context_.tls.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                                 ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                                 ssl::context::no_tlsv1_1,
                             ec);
    if (!ec) context_.tls.use_certificate_chain(net::buffer(tls_.server_cert_pem), ec);
    if (!ec) {
      context_.tls.use_private_key(net::buffer(tls_.server_key_pem), ssl::context::pem, ec);
    }
    // The key now lives in the TLS context only.
    std::fill(tls_.server_key_pem.begin(), tls_.server_key_pem.end(), '\0');
    tls_.server_key_pem.clear();
    if (ec) {
      return absl::InvalidArgumentError(
          "the relay cannot use the coordinator's TLS certificate and key: " + ec.message() +
          " (they live in STATE_DIR/tls or the coordinator Secret; remove them to make new ones)");
    }
    return absl::OkStatus();
  }

  // Each connection costs one descriptor: keep the caps below half the soft limit, leaving the
  // rest to gRPC, the state files and the other listeners.
  void FitCapsToDescriptorLimit() {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
    const size_t budget = std::max<size_t>(1, static_cast<size_t>(limit.rlim_cur) / 2);
    if (context_.max_connections > budget) {
      // Expected where the soft limit is the common 1024; a sign of trouble only when the
      // refusal counters then move.
      TM_LOG_INFO(
          "relay: --relay-max-connections {} lowered to {}, half the descriptor limit (ulimit -n "
          "{}); raise that limit to allow more",
          context_.max_connections, budget, static_cast<uint64_t>(limit.rlim_cur));
      context_.max_connections = budget;
    }
    context_.max_pending_connections =
        std::min(context_.max_pending_connections, context_.max_connections);
    context_.max_connections_per_source =
        std::min(context_.max_connections_per_source, context_.max_connections);
  }

  // Which cap, if any, refuses a new connection from `source`.
  std::optional<ConnectionCap> CapReached(const std::string& source) const {
    if (context_.sessions.size() >= context_.max_connections) return ConnectionCap::kTotal;
    if (auto it = context_.per_source.find(source);
        it != context_.per_source.end() && it->second >= context_.max_connections_per_source) {
      return ConnectionCap::kPerSource;
    }
    if (context_.pending >= context_.max_pending_connections) return ConnectionCap::kPending;
    return std::nullopt;
  }

  void LogRefusal(ConnectionCap cap, const std::string& source) {
    const MonoTime now = MonoClock::now();
    if (context_.unlogged_refusals++ > 0 && now - context_.last_refusal_log < kRefusalLogInterval) {
      return;
    }
    const char* what = cap == ConnectionCap::kTotal ? "connections in all (--relay-max-connections)"
                       : cap == ConnectionCap::kPerSource ? "connections from one source address "
                                                            "(--relay-max-connections-per-source)"
                                                          : "connections not yet authenticated "
                                                            "(--relay-max-pending-connections)";
    TM_LOG_WARN("relay refused connections: the cap on {} is reached; last source={} refused={}",
                what, source, context_.unlogged_refusals);
    context_.last_refusal_log = now;
    context_.unlogged_refusals = 0;
  }

  void Accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
      if (ec) {
        TM_LOG_WARN("relay accept failed, retrying: error={}", ec.message());
        accept_retry_.expires_after(kAcceptRetry);
        accept_retry_.async_wait([this](beast::error_code wait_ec) {
          if (!wait_ec) Accept();
        });
        return;
      }
      beast::error_code ignored;
      const tcp::endpoint remote = socket.remote_endpoint(ignored);
      const std::string source = remote.address().to_string();
      if (std::optional<ConnectionCap> cap = CapReached(source)) {
        // Closed before anything is read: the descriptor is free again at once.
        context_.hub.ConnectionRefused(*cap);
        socket.close(ignored);
        LogRefusal(*cap, source);
        Accept();
        return;
      }
      socket.set_option(tcp::no_delay(true), ignored);
      auto session = std::make_shared<Session>(&context_, std::move(socket), source);
      context_.sessions.emplace(session.get(), session);
      session->Start();
      Accept();
    });
  }

  // Declared before the io_context so that sessions destroyed with it find these still alive.
  ServerContext context_;
  TlsIdentity tls_;  // until Listen loads it
  std::atomic<uint16_t> port_{0};
  net::io_context ioc_{1};
  tcp::acceptor acceptor_{ioc_};
  net::steady_timer accept_retry_{ioc_};
  std::thread thread_;
};

RelayServer::RelayServer(const SecretKey& private_key, const TlsIdentity& tls,
                         MembershipCheck is_member, Options options)
    : impl_(std::make_unique<Impl>(private_key, tls, std::move(is_member), std::move(options))) {}

RelayServer::RelayServer(const SecretKey& private_key, const TlsIdentity& tls,
                         MembershipCheck is_member)
    : RelayServer(private_key, tls, std::move(is_member), Options()) {}

RelayServer::~RelayServer() = default;

absl::Status RelayServer::Listen(int port) { return impl_->Listen(port); }

absl::StatusOr<std::unique_ptr<RelayServer>> RelayServer::Start(int port,
                                                                const SecretKey& private_key,
                                                                const TlsIdentity& tls,
                                                                MembershipCheck is_member,
                                                                Options options) {
  auto server =
      std::make_unique<RelayServer>(private_key, tls, std::move(is_member), std::move(options));
  if (absl::Status status = server->Listen(port); !status.ok()) return status;
  return server;
}

absl::StatusOr<std::unique_ptr<RelayServer>> RelayServer::Start(int port,
                                                                const SecretKey& private_key,
                                                                const TlsIdentity& tls,
                                                                MembershipCheck is_member) {
  return Start(port, private_key, tls, std::move(is_member), Options());
}

void RelayServer::Revoke(const PublicKey& key) { impl_->Revoke(key); }
void RelayServer::Rescope(const PublicKey& key) { impl_->Rescope(key); }

uint16_t RelayServer::port() const { return impl_->port(); }
const PublicKey& RelayServer::public_key() const { return impl_->hub().public_key(); }
const RelayCounters& RelayServer::counters() const { return impl_->hub().counters(); }

}  // namespace tunnelmesh
