// Boost.Beast transport of the relay: accepts TCP, upgrades to WebSocket on the configured path,
// and moves whole binary messages between sockets and the RelayHub. Everything here runs on the
// server's single I/O thread, so sessions and the hub need no locks.
// Beast with g++ 12 needs <utility> before its own headers, so it stays first
// (the format check would sort it after relay_server.h).
// clang-format off
#include <utility>
// clang-format on

#include "operator/relay/relay_server.h"

#include <pthread.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
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
using tcp = net::ip::tcp;

// How long a connection the hub asked to close may take to flush and finish the close handshake.
constexpr std::chrono::seconds kCloseGrace{2};
// Read granularity; a frame is assembled from as many reads as it takes.
constexpr size_t kReadChunk = 8192;
// Pause before accepting again after an accept error (such as running out of descriptors).
constexpr std::chrono::milliseconds kAcceptRetry{50};

class Session;

// State the sessions share with the server; touched only on the I/O thread.
struct ServerContext {
  ServerContext(const SecretKey& key, RelayHub::MembershipCheck is_member,
                RelayServer::Options server_options)
      : hub(key, std::move(is_member)), options(std::move(server_options)) {}

  RelayHub hub;
  const RelayServer::Options options;
  // Every live session, so that shutdown can close them. The sessions own themselves through
  // the handlers of their pending operations.
  absl::flat_hash_map<Session*, std::weak_ptr<Session>> sessions;
};

// One TCP connection: HTTP upgrade, then WebSocket messages to and from the hub.
class Session final : public RelayConnection, public std::enable_shared_from_this<Session> {
 public:
  Session(ServerContext* context, tcp::socket socket)
      : context_(context), ws_(std::move(socket)), deadline_(ws_.get_executor()) {}

  void Start() {
    // One deadline covers the upgrade and the Hello; AuthDeadline() ignores a connection that
    // authenticated in time.
    ArmDeadline(context_->options.auth_timeout);
    beast::get_lowest_layer(ws_).expires_after(context_->options.auth_timeout);
    parser_.emplace();
    parser_->header_limit(8192);
    parser_->body_limit(0);
    http::async_read(
        ws_.next_layer(), http_buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRequest(ec); });
  }

  // Server shutdown: drop the connection now; the I/O loop stops right after.
  void Abort() { CloseSocket(); }

  bool Send(std::vector<uint8_t> frame, bool droppable) override {
    if (finished_ || close_sent_) return !droppable;
    if (droppable) {
      if (queued_droppable_ >= context_->options.max_queued_frames) return false;
      ++queued_droppable_;
    }
    queue_.push_back(Outgoing{std::move(frame), droppable});
    if (!writing_) Write();
    return true;
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
    if (queue_.front().droppable) --queued_droppable_;
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
    context_->sessions.erase(this);
  }

  ServerContext* const context_;
  websocket::stream<beast::tcp_stream> ws_;
  net::steady_timer deadline_;
  beast::flat_buffer http_buffer_;
  std::optional<http::request_parser<http::empty_body>> parser_;
  std::optional<http::response<http::empty_body>> refusal_;
  std::array<uint8_t, kReadChunk> chunk_;
  std::vector<uint8_t> message_;
  bool oversized_ = false;
  std::deque<Outgoing> queue_;
  size_t queued_droppable_ = 0;
  bool opened_ = false;  // the hub knows this connection
  bool writing_ = false;
  bool closing_ = false;  // the hub asked to close
  bool close_sent_ = false;
  bool finished_ = false;
};

}  // namespace

class RelayServer::Impl {
 public:
  Impl(const SecretKey& private_key, MembershipCheck is_member, Options options)
      : context_(private_key, std::move(is_member), std::move(options)) {}

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

  absl::Status Listen(int port) {
    if (port < 0 || port > 65535) {
      return absl::InvalidArgumentError("--relay-port " + std::to_string(port) +
                                        " is not a port number (0-65535)");
    }
    if (thread_.joinable()) return absl::FailedPreconditionError("the relay is already listening");
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
    TM_LOG_INFO("relay listening address={} port={} path={} key={}", address_text, bound.port(),
                context_.options.path, context_.hub.public_key().Short());
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
      socket.set_option(tcp::no_delay(true), ignored);
      auto session = std::make_shared<Session>(&context_, std::move(socket));
      context_.sessions.emplace(session.get(), session);
      session->Start();
      Accept();
    });
  }

  // Declared before the io_context so that sessions destroyed with it find these still alive.
  ServerContext context_;
  std::atomic<uint16_t> port_{0};
  net::io_context ioc_{1};
  tcp::acceptor acceptor_{ioc_};
  net::steady_timer accept_retry_{ioc_};
  std::thread thread_;
};

RelayServer::RelayServer(const SecretKey& private_key, MembershipCheck is_member, Options options)
    : impl_(std::make_unique<Impl>(private_key, std::move(is_member), std::move(options))) {}

RelayServer::RelayServer(const SecretKey& private_key, MembershipCheck is_member)
    : RelayServer(private_key, std::move(is_member), Options()) {}

RelayServer::~RelayServer() = default;

absl::Status RelayServer::Listen(int port) { return impl_->Listen(port); }

absl::StatusOr<std::unique_ptr<RelayServer>> RelayServer::Start(int port,
                                                                const SecretKey& private_key,
                                                                MembershipCheck is_member,
                                                                Options options) {
  auto server =
      std::make_unique<RelayServer>(private_key, std::move(is_member), std::move(options));
  if (absl::Status status = server->Listen(port); !status.ok()) return status;
  return server;
}

absl::StatusOr<std::unique_ptr<RelayServer>> RelayServer::Start(int port,
                                                                const SecretKey& private_key,
                                                                MembershipCheck is_member) {
  return Start(port, private_key, std::move(is_member), Options());
}

void RelayServer::Revoke(const PublicKey& key) { impl_->Revoke(key); }

uint16_t RelayServer::port() const { return impl_->port(); }
const PublicKey& RelayServer::public_key() const { return impl_->hub().public_key(); }
const RelayCounters& RelayServer::counters() const { return impl_->hub().counters(); }

}  // namespace tunnelmesh
