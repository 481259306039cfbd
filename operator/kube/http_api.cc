// HttpApi on cpprestsdk's http_client. This file is the one boundary where cpprestsdk's (and
// Boost.Asio's) exceptions are caught; nothing here lets one escape.
//
// pplx tasks: a task whose exception nobody observes terminates the process when it is destroyed
// (pplxlinux.h), so every task we start and may abandon (on stop) gets a continuation that
// observes it (WaitForTask).
// cpprestsdk otherwise defines a macro `U` that breaks fmt (spdlog) and anything else naming U.
#define _TURN_OFF_PLATFORM_STRING
#include "operator/kube/http_api.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "cpprest/http_client.h"
#include "lib/base/log.h"
#include "lib/base/status_macros.h"
#include "operator/kube/watch_stream.h"
#include "pplx/pplxtasks.h"

namespace tunnelmesh::kube {

namespace http = web::http;
namespace http_client = web::http::client;

namespace {

// A watch's client-side timeout is this much longer than the server's timeoutSeconds, so that
// the server, not the client, ends a healthy watch.
constexpr int kWatchTimeoutMarginSeconds = 30;
constexpr std::chrono::milliseconds kStopPollInterval(500);
constexpr size_t kReadChunk = 64 * 1024;

// Loads the trusted CA (replacing the system roots, as kubectl does) and the client certificate
// into `ctx`. Throws boost::system::system_error on unusable PEM.
void ConfigureTls(boost::asio::ssl::context& ctx, const ClusterConfig& config) {
  if (!config.ca_pem.empty()) {
    SSL_CTX_set_cert_store(ctx.native_handle(), X509_STORE_new());
    ctx.add_certificate_authority(boost::asio::buffer(config.ca_pem));
  }
  if (!config.client_cert_pem.empty()) {
    ctx.use_certificate_chain(boost::asio::buffer(config.client_cert_pem));
    ctx.use_private_key(boost::asio::buffer(config.client_key_pem), boost::asio::ssl::context::pem);
  }
}

// Waits until `task` is done, checking *stop every kStopPollInterval. Returns false when *stop
// came first; the task is then abandoned, its outcome observed by the continuation.
template <typename T>
bool WaitForTask(const pplx::task<T>& task, const std::atomic<bool>* stop) {
  // Shared with the continuation, which may run after an abandoned wait returned.
  auto done = std::make_shared<absl::Notification>();
  task.then([done](pplx::task<T> finished) {
    try {
      finished.wait();
    } catch (...) {
    }
    done->Notify();
  });
  while (!done->WaitForNotificationWithTimeout(absl::FromChrono(kStopPollInterval))) {
    if (stop != nullptr && stop->load(std::memory_order_acquire)) return false;
  }
  return true;
}

// Cancels a request's token when the scope ends, so that no connection outlives the call.
class CancelOnExit {
 public:
  ~CancelOnExit() { source_.cancel(); }
  pplx::cancellation_token token() const { return source_.get_token(); }

 private:
  pplx::cancellation_token_source source_;
};

std::chrono::seconds Seconds(absl::Duration duration) {
  return std::chrono::seconds(std::max<int64_t>(1, absl::ToInt64Seconds(duration)));
}

}  // namespace

struct HttpApi::Impl {
  ClusterConfig config;
  Options options;
  web::uri base;
  std::unique_ptr<http_client::http_client> http;  // shared by all non-watch requests
  HttpApiCounters counters;

  // Callers' threads share the token; token_mu is held for the token file's read (a few hundred
  // bytes on a local file system), never during a request.
  absl::Mutex token_mu;
  std::string token ABSL_GUARDED_BY(token_mu);
  absl::Time token_read_at ABSL_GUARDED_BY(token_mu) = absl::InfinitePast();

  http_client::http_client_config HttpConfig(std::chrono::seconds timeout) const {
    http_client::http_client_config http_config;
    http_config.set_timeout(timeout);
    http_config.set_validate_certificates(!config.insecure_skip_tls_verify);
    ClusterConfig tls = config;
    http_config.set_ssl_context_callback([tls](boost::asio::ssl::context& ctx) {
      try {
        ConfigureTls(ctx, tls);
      } catch (const std::exception& e) {
        // Checked in HttpApi::Create; here only if the library changed under us.
        TM_LOG_ERROR("kube client: cannot load TLS material: {}", e.what());
      }
    });
    return http_config;
  }

  // The bearer token: ClusterConfig::token_file (re-read after options.token_refresh, as
  // projected service account tokens rotate), else ClusterConfig::token.
  absl::StatusOr<std::string> BearerToken() ABSL_LOCKS_EXCLUDED(token_mu) {
    if (config.token_file.empty()) return config.token;
    absl::MutexLock lock(&token_mu);
    const absl::Time now = absl::Now();
    if (now - token_read_at < options.token_refresh) return token;
    absl::StatusOr<std::string> text = ReadWholeFile(config.token_file);
    counters.token_reads.fetch_add(1, std::memory_order_relaxed);
    if (!text.ok()) {
      if (token.empty()) {
        return absl::UnauthenticatedError("token file: " + std::string(text.status().message()));
      }
      TM_LOG_WARN("kube client: keeping the previous token: {}", text.status().ToString());
      return token;
    }
    token = std::string(absl::StripAsciiWhitespace(*text));
    token_read_at = now;
    return token;
  }

  // A request with our headers. `body` empty means none.
  absl::StatusOr<http::http_request> MakeRequest(const std::string& method,
                                                 const std::string& path_query,
                                                 const std::string& body,
                                                 std::string_view content_type) {
    ASSIGN_OR_RETURN(std::string bearer, BearerToken());
    http::http_request request(method);
    request.set_request_uri(web::uri(path_query));
    request.headers().add("Accept", "application/json");
    request.headers().add("User-Agent", options.user_agent);
    if (!bearer.empty()) request.headers().add("Authorization", "Bearer " + bearer);
    if (!body.empty()) request.set_body(body, std::string(content_type));
    return request;
  }

  // The error for an exception from cpprestsdk while doing `what`.
  absl::Status TransportError(const std::string& what, const std::exception& e) const {
    std::string message = what + ": " + e.what();
    if (const auto* http_error = dynamic_cast<const http::http_exception*>(&e)) {
      if (http_error->error_code() == std::errc::timed_out) {
        message += " (timed out)";
      }
    }
    if (absl::StrContains(message, "SSL") || absl::StrContains(message, "handshake")) {
      message += " (TLS with " + config.server +
                 " failed: check the CA (certificate-authority), the server name in the URL "
                 "against its certificate, and the client certificate)";
    }
    return absl::UnavailableError(message);
  }

  absl::Status Fail(absl::Status status) {
    counters.failures.fetch_add(1, std::memory_order_relaxed);
    return status;
  }

  // One request and its JSON answer ({} for an empty body).
  absl::StatusOr<nlohmann::json> Call(const std::string& method, const std::string& path_query,
                                      const std::string& body = "",
                                      std::string_view content_type = "application/json") {
    const std::string what = method + " " + path_query;
    counters.requests.fetch_add(1, std::memory_order_relaxed);
    absl::StatusOr<http::http_request> request =
        MakeRequest(method, path_query, body, content_type);
    if (!request.ok()) return Fail(Annotate(request.status(), what));
    try {
      http::http_response response = http->request(*request).get();
      const std::vector<unsigned char> bytes = response.extract_vector().get();
      const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      absl::Status status = StatusFromResponse(response.status_code(), text, what);
      if (!status.ok()) return Fail(std::move(status));
      if (text.empty()) return nlohmann::json::object();
      nlohmann::json parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (parsed.is_discarded()) {
        return Fail(absl::InternalError(what + ": HTTP " + std::to_string(response.status_code()) +
                                        " with a body that is not JSON: " + Printable(text, 200)));
      }
      return parsed;
    } catch (const std::exception& e) {
      return Fail(TransportError(what, e));
    } catch (...) {
      return Fail(absl::UnavailableError(what + ": unknown error in the HTTP client"));
    }
  }

  // PUT of `object` to its own path, or to its `subresource`.
  absl::StatusOr<nlohmann::json> Put(const Resource& resource, const std::string& ns,
                                     const nlohmann::json& object, std::string_view subresource) {
    const std::string name = ObjectName(object);
    const std::string object_ns = ns.empty() ? ObjectNamespace(object) : ns;
    if (name.empty()) {
      return Fail(absl::InvalidArgumentError("update " + resource.plural +
                                             ": the object has no metadata.name"));
    }
    return Call("PUT", ResourcePath(resource, object_ns, name, subresource), object.dump());
  }

  absl::Status Watch(const std::string& path_query, int timeout_seconds,
                     const std::function<bool(const WatchEvent&)>& on_event,
                     const std::atomic<bool>* stop);
};

absl::Status HttpApi::Impl::Watch(const std::string& path_query, int timeout_seconds,
                                  const std::function<bool(const WatchEvent&)>& on_event,
                                  const std::atomic<bool>* stop) {
  const std::string what = "WATCH " + path_query;
  counters.requests.fetch_add(1, std::memory_order_relaxed);
  counters.watches.fetch_add(1, std::memory_order_relaxed);
  absl::StatusOr<http::http_request> request = MakeRequest("GET", path_query, "", "");
  if (!request.ok()) return Fail(Annotate(request.status(), what));
  const absl::Status cancelled = absl::CancelledError(what + ": stopped");
  // Declared before the client and the response so that it cancels (closes the connection)
  // before they go.
  CancelOnExit cancel;
  try {
    http_client::http_client watch_http(
        base, HttpConfig(std::chrono::seconds(timeout_seconds + kWatchTimeoutMarginSeconds)));
    pplx::task<http::http_response> response_task = watch_http.request(*request, cancel.token());
    if (!WaitForTask(response_task, stop)) return cancelled;
    http::http_response response = response_task.get();
    if (response.status_code() != http::status_codes::OK) {
      pplx::task<std::vector<unsigned char>> body_task = response.extract_vector();
      if (!WaitForTask(body_task, stop)) return cancelled;
      const std::vector<unsigned char> bytes = body_task.get();
      absl::Status status = StatusFromResponse(
          response.status_code(),
          std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), what);
      if (status.ok()) status = absl::UnknownError(what + ": unexpected HTTP status");
      return Fail(std::move(status));
    }

    concurrency::streams::streambuf<uint8_t> body = response.body().streambuf();
    using Traits = concurrency::streams::streambuf<uint8_t>::traits;
    WatchLineSplitter splitter;
    bool callback_stopped = false;
    absl::Status event_error;
    const auto on_line = [&](std::string_view line) -> absl::Status {
      absl::StatusOr<WatchEvent> event = ParseWatchEvent(line);
      if (!event.ok()) return Annotate(event.status(), what);
      if (event->type == "ERROR") return StatusFromApiStatus(event->object, 200, what);
      counters.watch_events.fetch_add(1, std::memory_order_relaxed);
      if (!on_event(*event)) {
        callback_stopped = true;
        return absl::CancelledError("");
      }
      if (stop != nullptr && stop->load(std::memory_order_acquire)) return cancelled;
      return absl::OkStatus();
    };
    std::vector<uint8_t> chunk(kReadChunk);
    while (true) {
      // getc() completes when a byte is there (without taking it) or at the end of the body;
      // whatever has arrived by then is read at once without waiting for more.
      pplx::task<Traits::int_type> next = body.getc();
      if (!WaitForTask(next, stop)) return cancelled;
      if (next.get() == Traits::eof()) break;
      const size_t available = std::clamp<size_t>(body.in_avail(), 1, chunk.size());
      const size_t got = body.getn(chunk.data(), available).get();
      if (got == 0) break;
      absl::Status status = splitter.Feed(
          std::string_view(reinterpret_cast<const char*>(chunk.data()), got), on_line);
      if (callback_stopped) return absl::OkStatus();
      if (!status.ok())
        return status.code() == absl::StatusCode::kCancelled ? status : Fail(status);
    }
    absl::Status status = splitter.Finish(on_line);
    if (callback_stopped) return absl::OkStatus();
    if (!status.ok()) return Fail(status);
    // The end of the body: the server closed the watch, or the connection broke.
    pplx::task<http::http_response> complete = response.content_ready();
    if (!WaitForTask(complete, stop)) return cancelled;
    complete.get();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    if (stop != nullptr && stop->load(std::memory_order_acquire)) return cancelled;
    return Fail(TransportError(what, e));
  } catch (...) {
    return Fail(absl::UnavailableError(what + ": unknown error in the HTTP client"));
  }
}

HttpApi::HttpApi(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpApi::~HttpApi() = default;

absl::StatusOr<std::unique_ptr<HttpApi>> HttpApi::Create(ClusterConfig config) {
  return Create(std::move(config), Options());
}

absl::StatusOr<std::unique_ptr<HttpApi>> HttpApi::Create(ClusterConfig config, Options options) {
  auto impl = std::make_unique<Impl>();
  if (options.list_page_size < 1) {
    return absl::InvalidArgumentError("kube client: list_page_size must be at least 1");
  }
  try {
    impl->base = web::uri(config.server);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError("kube client: server \"" + config.server +
                                      "\" is not a URL: " + e.what());
  }
  const std::string scheme = impl->base.scheme();
  if ((scheme != "https" && scheme != "http") || impl->base.host().empty()) {
    return absl::InvalidArgumentError("kube client: server \"" + config.server +
                                      "\" is not https://HOST[:PORT]");
  }
  if (config.client_cert_pem.empty() != config.client_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "kube client: a client certificate needs both the certificate and its key");
  }
  try {
    boost::asio::ssl::context probe(boost::asio::ssl::context::sslv23_client);
    ConfigureTls(probe, config);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        "kube client: unusable TLS material (certificate-authority, client-certificate or "
        "client-key): " +
        std::string(e.what()));
  }
  impl->config = std::move(config);
  impl->options = std::move(options);
  try {
    impl->http = std::make_unique<http_client::http_client>(
        impl->base, impl->HttpConfig(Seconds(impl->options.request_timeout)));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError("kube client: " + std::string(e.what()));
  }
  return std::unique_ptr<HttpApi>(new HttpApi(std::move(impl)));
}

absl::StatusOr<nlohmann::json> HttpApi::Get(const Resource& resource, const std::string& ns,
                                            const std::string& name) {
  return impl_->Call("GET", ResourcePath(resource, ns, name));
}

absl::StatusOr<nlohmann::json> HttpApi::List(const Resource& resource, const std::string& ns,
                                             const std::string& label_selector,
                                             const std::string& field_selector) {
  nlohmann::json result;
  nlohmann::json items = nlohmann::json::array();
  std::string continue_token;
  do {
    const std::string path = ResourcePath(resource, ns, "") +
                             QueryString({{"labelSelector", label_selector},
                                          {"fieldSelector", field_selector},
                                          {"limit", std::to_string(impl_->options.list_page_size)},
                                          {"continue", continue_token}});
    ASSIGN_OR_RETURN(nlohmann::json page, impl_->Call("GET", path));
    impl_->counters.list_pages.fetch_add(1, std::memory_order_relaxed);
    if (!page.is_object()) {
      return impl_->Fail(absl::InternalError("GET " + path + ": the answer is not a List"));
    }
    if (auto page_items = page.find("items"); page_items != page.end() && page_items->is_array()) {
      for (nlohmann::json& item : *page_items) items.push_back(std::move(item));
    }
    continue_token.clear();
    if (auto metadata = page.find("metadata"); metadata != page.end() && metadata->is_object()) {
      if (auto next = metadata->find("continue"); next != metadata->end() && next->is_string()) {
        continue_token = next->get<std::string>();
      }
    }
    result = std::move(page);
  } while (!continue_token.empty());
  result["items"] = std::move(items);
  if (result["metadata"].is_object()) {
    result["metadata"].erase("continue");
    result["metadata"].erase("remainingItemCount");
  }
  return result;
}

absl::StatusOr<nlohmann::json> HttpApi::Create(const Resource& resource, const std::string& ns,
                                               const nlohmann::json& object) {
  const std::string object_ns = ns.empty() ? ObjectNamespace(object) : ns;
  if (resource.namespaced && object_ns.empty()) {
    return impl_->Fail(
        absl::InvalidArgumentError("create " + resource.plural + ": no namespace given"));
  }
  return impl_->Call("POST", ResourcePath(resource, object_ns, ""), object.dump());
}

absl::StatusOr<nlohmann::json> HttpApi::Update(const Resource& resource, const std::string& ns,
                                               const nlohmann::json& object) {
  return impl_->Put(resource, ns, object, "");
}

absl::StatusOr<nlohmann::json> HttpApi::UpdateStatus(const Resource& resource,
                                                     const std::string& ns,
                                                     const nlohmann::json& object) {
  return impl_->Put(resource, ns, object, "status");
}

absl::StatusOr<nlohmann::json> HttpApi::Patch(const Resource& resource, const std::string& ns,
                                              const std::string& name, const nlohmann::json& patch,
                                              PatchType type, bool status_subresource) {
  return impl_->Call("PATCH", ResourcePath(resource, ns, name, status_subresource ? "status" : ""),
                     patch.dump(), PatchContentType(type));
}

absl::Status HttpApi::Delete(const Resource& resource, const std::string& ns,
                             const std::string& name, const std::string& uid_precondition) {
  std::string body;
  if (!uid_precondition.empty()) {
    body = nlohmann::json{{"apiVersion", "v1"},
                          {"kind", "DeleteOptions"},
                          {"preconditions", {{"uid", uid_precondition}}}}
               .dump();
  }
  return impl_->Call("DELETE", ResourcePath(resource, ns, name), body).status();
}

absl::Status HttpApi::Watch(const Resource& resource, const std::string& ns,
                            const std::string& resource_version, int timeout_seconds,
                            const std::function<bool(const WatchEvent&)>& on_event,
                            const std::atomic<bool>* stop, const std::string& label_selector) {
  timeout_seconds = std::max(1, timeout_seconds);
  const std::string path = ResourcePath(resource, ns, "") +
                           QueryString({{"watch", "1"},
                                        {"resourceVersion", resource_version},
                                        {"allowWatchBookmarks", "true"},
                                        {"timeoutSeconds", std::to_string(timeout_seconds)},
                                        {"labelSelector", label_selector}});
  return impl_->Watch(path, timeout_seconds, on_event, stop);
}

const ClusterConfig& HttpApi::config() const { return impl_->config; }

const HttpApiCounters& HttpApi::counters() const { return impl_->counters; }

}  // namespace tunnelmesh::kube
