#include "services/gateway/guarded_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/gateway/api.h"
#include "skinlesion/telemetry/families.h"

namespace skinlesion::gateway {
namespace {

using Clock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

// While the accept thread runs a connection's task itself (the pool is full), the
// task only refuses it.
thread_local bool tl_refuse_all = false;

Clock::duration ToClock(absl::Duration d) {
  return std::chrono::duration_cast<Clock::duration>(absl::ToChronoNanoseconds(d));
}

int PollMs(Clock::duration left, int cap_ms) {
  const auto ms = std::chrono::duration_cast<Ms>(left).count() + 1;
  return static_cast<int>(std::clamp<int64_t>(ms, 0, cap_ms));
}

std::string AddressOf(const sockaddr_storage& addr, int* port) {
  char text[INET6_ADDRSTRLEN] = "";
  *port = 0;
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
    *port = ntohs(a->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
    *port = ntohs(a->sin6_port);
  }
  return text;
}

std::string PeerAddress(int fd, int* port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    *port = 0;
    return "";
  }
  return AddressOf(addr, port);
}

// Sends all of `text` if the socket takes it at once (a fresh or idle socket's
// buffer always does for a short answer); never blocks.
void SendNow(int fd, const std::string& text) {
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::send(fd, text.data() + off, text.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

// A complete HTTP response with a JSON error body, written past httplib.
std::string CannedResponse(int status, const char* reason, const ApiError& e) {
  const std::string body = e.ToJson().dump();
  std::string head = absl::StrCat("HTTP/1.1 ", status, " ", reason,
                                  "\r\nContent-Type: application/json\r\nContent-Length: ",
                                  body.size(), "\r\nConnection: close\r\n");
  if (e.retry_after_s > 0) absl::StrAppend(&head, "Retry-After: ", e.retry_after_s, "\r\n");
  absl::StrAppend(&head, "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n\r\n");
  return head + body;
}

// Reads (and drops) what the peer has already sent, without waiting: closing a
// socket with unread bytes sends a reset, which can destroy the answer just written.
void DrainNow(int fd) {
  char scratch[16384];
  for (int i = 0; i < 4; ++i) {
    if (::recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT) <= 0) return;
  }
}

const char* RefusalName(GuardedServer::Refusal r) {
  switch (r) {
    case GuardedServer::Refusal::kConnections:
      return "connections";
    case GuardedServer::Refusal::kPerClient:
      return "per_client";
    case GuardedServer::Refusal::kHeaderTimeout:
      return "header_timeout";
    case GuardedServer::Refusal::kBodyTimeout:
      return "body_timeout";
    case GuardedServer::Refusal::kMemoryBudget:
      return "memory_budget";
  }
  return "other";
}

}  // namespace

// ---------------------------------------------------------------------------

struct GuardedServer::Connection {
  enum class Phase { kIdle, kHeaders, kBody };

  int fd = -1;
  std::string peer;
  int peer_port = 0;
  Phase phase = Phase::kHeaders;
  Clock::time_point deadline;   // Of the current read phase.
  bool request_started = false; // A byte of the current request has arrived.
  size_t header_bytes = 0;
  bool timed_out = false;    // 408 sent.
  bool close_after = false;  // The connection ends after this request.
  ApiError refusal;          // status != 0: answered by the pre-routing handler.
  size_t reserved = 0;       // Body bytes of the in-flight budget held.
  uint64_t unread_body = 0;  // Content-Length of a refused (unread) body.
};

thread_local GuardedServer::Connection* GuardedServer::current_ = nullptr;

// One thread per open connection: threads start on demand and stay ready
// afterwards (joined at shutdown). Over the cap the accept thread refuses the
// connection itself.
class GuardedServer::ConnectionPool final : public httplib::TaskQueue {
 public:
  explicit ConnectionPool(GuardedServer& server) : server_(server) {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < server_.limits_.min_threads; ++i) SpawnLocked();
  }

  void enqueue(std::function<void()> fn) override ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      if (server_.open_connections_.load() < server_.limits_.max_connections && !shutdown_) {
        server_.open_connections_.fetch_add(1);
        server_.open_gauge_.Increment();
        jobs_.push_back(std::move(fn));  // Wakes an idle worker (its condition).
        if (idle_ < jobs_.size()) SpawnLocked();
        return;
      }
    }
    tl_refuse_all = true;
    fn();  // process_and_close_socket: a canned 503, no read, no wait.
    tl_refuse_all = false;
  }

  void shutdown() override ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      shutdown_ = true;
      threads.swap(threads_);
    }
    for (std::thread& t : threads) t.join();
  }

 private:
  void SpawnLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    threads_.emplace_back([this] { Work(); });
  }

  void Work() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !jobs_.empty() || shutdown_; };
    for (;;) {
      ++idle_;
      mu_.Await(absl::Condition(&ready));
      --idle_;
      if (jobs_.empty()) return;  // Shut down.
      std::function<void()> fn = std::move(jobs_.front());
      jobs_.pop_front();
      mu_.Unlock();
      fn();
      server_.open_connections_.fetch_sub(1);
      server_.open_gauge_.Decrement();
      mu_.Lock();
    }
  }

  GuardedServer& server_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

// The Stream httplib parses from: buffered reads that wait no later than the
// current phase's deadline, writes with a deadline per response.
class GuardedServer::DeadlineStream final : public httplib::Stream {
 public:
  DeadlineStream(GuardedServer& server, Connection& conn) : server_(&server), conn_(&conn) {}

  bool dead() const { return dead_; }
  bool buffered() const { return off_ < len_; }

  // Between keep-alive requests: true once the next request's first byte (or the
  // peer's close) is there; false after the idle timeout or when the server stops.
  bool WaitForNextRequest(Clock::duration idle) {
    if (buffered()) return true;
    const Clock::time_point until = Clock::now() + idle;
    for (;;) {
      if (server_->stopping()) return false;
      const auto now = Clock::now();
      if (now >= until) return false;
      pollfd p{conn_->fd, POLLIN, 0};
      const int r = ::poll(&p, 1, PollMs(until - now, 100));
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return false;
    }
  }

  bool is_readable() const override { return buffered() || WaitReadable(); }

  bool is_writable() const override {
    if (dead_) return false;
    pollfd p{conn_->fd, POLLOUT, 0};
    const int r = ::poll(&p, 1, PollMs(ToClock(server_->limits_.write_timeout), 1 << 30));
    return r > 0 && (p.revents & (POLLERR | POLLHUP)) == 0;
  }

  ssize_t read(char* ptr, size_t size) override {
    if (buffered()) {
      const size_t n = std::min(size, len_ - off_);
      std::memcpy(ptr, buf_ + off_, n);
      off_ += n;
      return static_cast<ssize_t>(n);
    }
    writing_ = false;
    if (!WaitReadable()) return -1;
    ssize_t n;
    ssize_t out;
    if (size >= sizeof(buf_)) {
      n = ::recv(conn_->fd, ptr, size, 0);
      out = n;
    } else {
      n = ::recv(conn_->fd, buf_, sizeof(buf_), 0);
      out = n;
      if (n > 0) {
        len_ = static_cast<size_t>(n);
        off_ = std::min(size, len_);
        std::memcpy(ptr, buf_, off_);
        out = static_cast<ssize_t>(off_);
      }
    }
    if (n <= 0) return n;
    conn_->request_started = true;
    if (conn_->phase == Connection::Phase::kHeaders) {
      conn_->header_bytes += static_cast<size_t>(n);
      // One buffer of slack: a read may take the first body bytes along.
      if (conn_->header_bytes > server_->limits_.max_header_bytes + sizeof(buf_)) {
        Fail(431, "Request Header Fields Too Large",
             {.status = 431,
              .code = "bad_request",
              .message = absl::StrCat("The request line and headers exceed ",
                                      server_->limits_.max_header_bytes, " bytes.")});
        return -1;
      }
    }
    return out;
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (dead_) return -1;
    if (!writing_) {
      writing_ = true;
      write_deadline_ = Clock::now() + ToClock(server_->limits_.write_timeout);
    }
    for (;;) {
      const auto now = Clock::now();
      if (now >= write_deadline_) {
        dead_ = true;
        return -1;
      }
      pollfd p{conn_->fd, POLLOUT, 0};
      const int r = ::poll(&p, 1, PollMs(write_deadline_ - now, 1 << 30));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) continue;  // Timed out: the deadline check ends it.
      const ssize_t n = ::send(conn_->fd, ptr, size, MSG_NOSIGNAL);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n < 0) dead_ = true;
      return n;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = conn_->peer;
    port = conn_->peer_port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (getsockname(conn_->fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ip.clear();
      port = 0;
      return;
    }
    ip = AddressOf(addr, &port);
  }
  socket_t socket() const override { return conn_->fd; }

 private:
  // True when a read will not block; false (after a 408 when the client was
  // sending a request) once the phase's deadline has passed.
  bool WaitReadable() const {
    if (dead_) return false;
    for (;;) {
      const bool headers = conn_->phase != Connection::Phase::kBody;
      // Stopping: a request whose headers have not all arrived is not started.
      if (headers && server_->stopping()) {
        dead_ = true;
        return false;
      }
      const auto now = Clock::now();
      if (now >= conn_->deadline) {
        server_->Count(headers ? Refusal::kHeaderTimeout : Refusal::kBodyTimeout);
        conn_->timed_out = true;
        if (!headers || conn_->request_started) {
          Fail(408, "Request Timeout",
               {.status = 408,
                .code = "request_timeout",
                .message = headers ? "The request headers did not arrive in time."
                                   : "The request body did not arrive in time."});
        } else {
          dead_ = true;
          conn_->close_after = true;
        }
        return false;
      }
      pollfd p{conn_->fd, POLLIN, 0};
      const int r = ::poll(&p, 1, PollMs(conn_->deadline - now, headers ? 100 : 1000));
      if (r > 0) return true;  // Data, the peer's close or an error: recv says which.
      if (r < 0 && errno != EINTR) {
        dead_ = true;
        return false;
      }
    }
  }

  // Answers the client past httplib and ends the connection.
  void Fail(int status, const char* reason, const ApiError& e) const {
    SendNow(conn_->fd, CannedResponse(status, reason, e));
    dead_ = true;
    conn_->close_after = true;
  }

  GuardedServer* server_;
  Connection* conn_;
  char buf_[4096];
  size_t off_ = 0;
  size_t len_ = 0;
  mutable bool dead_ = false;
  bool writing_ = false;
  Clock::time_point write_deadline_;
};

// ---------------------------------------------------------------------------

GuardedServer::GuardedServer(ConnectionLimits limits, prometheus::Registry& registry)
    : limits_(limits),
      refused_(telemetry::AddCounter(
          registry, "skinlesion_gateway_connections_refused_total",
          "Connections refused or cut short by the gateway's guard, by reason "
          "(connections, per_client, header_timeout, body_timeout, "
          "memory_budget)")),
      open_gauge_(telemetry::AddGauge(registry, "skinlesion_gateway_open_connections",
                                      "Open HTTP connections")
                      .Add({})),
      inflight_gauge_(telemetry::AddGauge(registry, "skinlesion_gateway_inflight_body_bytes",
                                          "Content-Length of the requests being read or handled")
                          .Add({})) {
  for (Refusal r : {Refusal::kConnections, Refusal::kPerClient, Refusal::kHeaderTimeout,
                    Refusal::kBodyTimeout, Refusal::kMemoryBudget}) {
    refused_.Add({{"reason", RefusalName(r)}});
  }
  new_task_queue = [this] { return new ConnectionPool(*this); };
  // httplib's own per-read limits stay as a backstop; the deadlines above decide.
  set_read_timeout(std::max<int64_t>(1, absl::ToInt64Seconds(limits_.header_timeout) + 1), 0);
  set_write_timeout(std::max<int64_t>(1, absl::ToInt64Seconds(limits_.write_timeout)), 0);
  set_keep_alive_max_count(static_cast<size_t>(std::max(1, limits_.max_requests_per_connection)));
  set_payload_max_length(limits_.max_body_bytes);
  SetPreRoutingHandler(nullptr);
}

GuardedServer::~GuardedServer() = default;

bool GuardedServer::stopping() const { return svr_sock_ == INVALID_SOCKET; }

bool GuardedServer::WidenListenBacklog() {
  const socket_t sock = svr_sock_;
  if (sock == INVALID_SOCKET) return false;
  // Linux takes a second listen() on a listening socket as a new backlog (capped by
  // net.core.somaxconn).
  return ::listen(sock, std::max(limits_.max_connections, 128)) == 0;
}

bool GuardedServer::CurrentRequestTimedOut() {
  return current_ != nullptr && current_->timed_out;
}

void GuardedServer::Count(Refusal refusal) {
  refused_.Add({{"reason", RefusalName(refusal)}}).Increment();
}

void GuardedServer::SetPreRoutingHandler(HandlerWithResponse handler) {
  set_pre_routing_handler([this, handler = std::move(handler)](const httplib::Request& req,
                                                                 httplib::Response& res) {
    Connection* conn = current_;
    if (conn != nullptr && conn->refusal.status != 0) {
      res.status = conn->refusal.status;
      if (conn->refusal.retry_after_s > 0) {
        res.set_header("Retry-After", std::to_string(conn->refusal.retry_after_s));
      }
      res.set_content(conn->refusal.ToJson().dump(), "application/json");
      return HandlerResponse::Handled;
    }
    const HandlerResponse r = handler ? handler(req, res) : HandlerResponse::Unhandled;
    if (r == HandlerResponse::Handled && conn != nullptr && conn->reserved > 0) {
      // Answered before its body was read: the body must not be parsed as the
      // next request.
      conn->unread_body = conn->reserved;
      conn->close_after = true;
      res.set_header("Connection", "close");
    }
    return r;
  });
}

void GuardedServer::RefuseConnection(socket_t sock, const char* message) {
  DrainNow(sock);
  SendNow(sock, CannedResponse(503, "Service Unavailable",
                               {.status = 503,
                                .code = "service_unavailable",
                                .message = message,
                                .retry_after_s = limits_.retry_after_s}));
  ::shutdown(sock, SHUT_WR);
  DrainNow(sock);
  ::close(sock);
}

bool GuardedServer::process_and_close_socket(socket_t sock) {
  if (tl_refuse_all) {
    Count(Refusal::kConnections);
    RefuseConnection(sock, "The gateway has too many open connections; retry later.");
    return false;
  }
  Connection conn;
  conn.fd = sock;
  conn.deadline = Clock::now() + ToClock(limits_.header_timeout);
  conn.peer = PeerAddress(sock, &conn.peer_port);
  if (limits_.max_connections_per_client > 0) {
    bool refused = false;
    {
      absl::MutexLock lock(&clients_mu_);
      int& open = per_client_[conn.peer];
      if (open >= limits_.max_connections_per_client) {
        refused = true;
      } else {
        ++open;
      }
    }
    if (refused) {
      Count(Refusal::kPerClient);
      RefuseConnection(sock, "Too many open connections from this address; retry later.");
      return false;
    }
  }
  current_ = &conn;
  ServeConnection(conn);
  current_ = nullptr;
  if (limits_.max_connections_per_client > 0) {
    absl::MutexLock lock(&clients_mu_);
    auto it = per_client_.find(conn.peer);
    if (it != per_client_.end() && --it->second <= 0) per_client_.erase(it);
  }
  if (conn.close_after && !conn.timed_out) {
    // A refused body stays unread: let the answer reach the client before closing
    // (a close with unread bytes is a reset, and clients that send the whole body
    // before reading would see only that). Bounded: 32 MiB, 2 s.
    ::shutdown(sock, SHUT_WR);
    const uint64_t limit = std::clamp<uint64_t>(conn.unread_body, 64 << 10, 32 << 20);
    const auto until =
        Clock::now() + std::chrono::milliseconds(conn.unread_body > (64 << 10) ? 2000 : 200);
    char scratch[16384];
    uint64_t drained = 0;
    while (drained < limit) {
      const auto now = Clock::now();
      if (now >= until) break;
      pollfd p{sock, POLLIN, 0};
      if (::poll(&p, 1, PollMs(until - now, 2000)) <= 0) break;
      const ssize_t n = ::recv(sock, scratch, sizeof(scratch), MSG_DONTWAIT);
      if (n <= 0) break;
      drained += static_cast<uint64_t>(n);
    }
  } else {
    ::shutdown(sock, SHUT_RDWR);
  }
  ::close(sock);
  return true;
}

void GuardedServer::ServeConnection(Connection& conn) {
  DeadlineStream strm(*this, conn);
  for (int served = 0; served < limits_.max_requests_per_connection; ++served) {
    if (served > 0) {
      conn.phase = Connection::Phase::kIdle;
      if (!strm.WaitForNextRequest(ToClock(limits_.idle_timeout))) return;
      conn.deadline = Clock::now() + ToClock(limits_.header_timeout);
    }
    conn.phase = Connection::Phase::kHeaders;
    conn.request_started = strm.buffered();
    conn.header_bytes = 0;
    conn.refusal = {};
    conn.refusal.status = 0;
    conn.unread_body = 0;
    const bool last = served + 1 >= limits_.max_requests_per_connection || stopping();
    bool closed = false;
    const bool ok = process_request(strm, last, closed,
                                    [this, &conn](httplib::Request& req) { OnHeaders(conn, req); });
    if (conn.reserved > 0) {
      inflight_bytes_.fetch_sub(conn.reserved);
      inflight_gauge_.Decrement(static_cast<double>(conn.reserved));
      conn.reserved = 0;
    }
    if (!ok || closed || last || conn.close_after || strm.dead()) return;
  }
}

void GuardedServer::OnHeaders(Connection& conn, httplib::Request& req) {
  conn.phase = Connection::Phase::kBody;
  conn.deadline = Clock::now() + ToClock(limits_.body_timeout);
  auto end_connection = [&] {
    conn.close_after = true;
    req.headers.erase("Connection");
    req.set_header("Connection", "close");  // httplib then answers "Connection: close".
  };
  auto refuse = [&](ApiError e) {
    conn.refusal = std::move(e);
    end_connection();
  };
  // httplib reads a body for these methods; DELETE only with a Content-Length.
  const bool reads_body = req.method == "POST" || req.method == "PUT" || req.method == "PATCH" ||
                          req.method == "PRI" || req.method == "DELETE";
  const size_t lengths = req.headers.count("Content-Length");
  if (req.has_header("Transfer-Encoding")) {
    return refuse({.status = 411,
                   .code = "length_required",
                   .message = "Send the body with a Content-Length header (chunked transfer "
                              "encoding is not accepted)."});
  }
  if (lengths > 1) return refuse(BadRequest("The request has more than one Content-Length."));
  if (lengths == 0) {
    if (reads_body && req.method != "DELETE") {
      return refuse({.status = 411,
                     .code = "length_required",
                     .message = absl::StrCat("A ", req.method.substr(0, 8),
                                             " needs a Content-Length header.")});
    }
    return;
  }
  const std::string text(absl::StripAsciiWhitespace(req.get_header_value("Content-Length")));
  uint64_t length = 0;
  if (text.empty() || text.size() > 19 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(text, &length)) {
    return refuse(BadRequest("The Content-Length header is not a number."));
  }
  if (length == 0) return;
  conn.unread_body = length;
  if (!reads_body) return end_connection();  // httplib would parse the body as a request.
  if (length > limits_.max_body_bytes) {
    return refuse({.status = 413,
                   .code = "payload_too_large",
                   .message = limits_.max_image_bytes > 0
                                  ? absl::StrCat("The image is larger than ", limits_.max_image_bytes,
                                                 " bytes (the request body is over ",
                                                 limits_.max_body_bytes, " bytes).")
                                  : absl::StrCat("The request body is larger than ",
                                                 limits_.max_body_bytes, " bytes.")});
  }
  size_t current = inflight_bytes_.load();
  do {
    if (current + length > limits_.max_inflight_body_bytes) {
      Count(Refusal::kMemoryBudget);
      return refuse({.status = 503,
                     .code = "service_unavailable",
                     .message = "The gateway is receiving too many uploads at once; retry later.",
                     .retry_after_s = limits_.retry_after_s});
    }
  } while (!inflight_bytes_.compare_exchange_weak(current, current + length));
  conn.reserved = length;
  conn.unread_body = 0;
  inflight_gauge_.Increment(static_cast<double>(length));
  // One allocation of the final size instead of doubling (a multipart body is
  // split into its parts instead).
  if (!req.is_multipart_form_data()) req.body.reserve(length);
}

}  // namespace skinlesion::gateway
