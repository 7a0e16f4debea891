// An httplib::Server that slow or greedy clients cannot starve (docs/gateway.md,
// "Connections and deadlines").
//
// cpp-httplib 0.11 (Debian 12) reads a request on a pool thread with a per-read
// timeout that restarts on every byte, so a client that trickles one header line
// every few seconds holds a worker for as long as it likes, and a POST without
// Content-Length is read until the peer closes. GuardedServer keeps httplib's
// parsing, routing, multipart and response writing and replaces two of its parts:
//
//  - the task queue: one thread per open connection (started on demand, up to
//    `max_connections`; `min_threads` stay ready), so a connection that is still
//    sending its request never keeps another connection's request waiting. Over
//    `max_connections` the accept thread itself answers 503 + Retry-After and
//    closes; over `max_connections_per_client` (by peer address) the connection's
//    thread does the same before reading anything;
//  - the connection loop (`process_and_close_socket`, virtual in httplib): its own
//    Stream with absolute deadlines: the request line and headers must arrive within
//    `header_timeout` of the connection (or of the first byte of a keep-alive
//    request), the body within `body_timeout` of the headers; past one the client
//    gets 408 and the connection closes. Header bytes are capped too.
//
// After the headers and before any body byte is read, every POST / PUT / PATCH
// needs one valid Content-Length (411 / 400 otherwise, chunked included), at most
// `max_body_bytes` (413), and within a global budget of body bytes in flight
// (`max_inflight_body_bytes`, the sum of the Content-Length of the requests being
// read or handled; 503 + Retry-After above it). These answers close the connection
// (the body stays unread).
//
//   GuardedServer server(limits, registry);
//   server.SetPreRoutingHandler(...);   // instead of set_pre_routing_handler
//   server.Get(...); server.bind_to_port(...); server.listen_after_bind();
#ifndef SERVICES_GATEWAY_GUARDED_SERVER_H_
#define SERVICES_GATEWAY_GUARDED_SERVER_H_

#include <atomic>
#include <cstddef>
#include <map>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "httplib.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace skinlesion::gateway {

struct ConnectionLimits {
  int max_connections = 512;            // Open connections in total.
  int max_connections_per_client = 64;  // Per peer address; 0: no per-address cap.
  int min_threads = 16;                 // Connection threads kept ready.
  absl::Duration header_timeout = absl::Seconds(10);  // Request line + headers.
  absl::Duration body_timeout = absl::Seconds(60);    // The whole body.
  absl::Duration idle_timeout = absl::Seconds(5);     // Keep-alive wait between requests.
  absl::Duration write_timeout = absl::Seconds(30);   // Each write of the response.
  size_t max_header_bytes = 64 << 10;                 // Request line + headers.
  size_t max_body_bytes = 10 << 20;                   // Content-Length above: 413.
  // The image limit the 413 message quotes first (what the website tells the user;
  // the body limit adds multipart framing). 0: quote max_body_bytes only.
  size_t max_image_bytes = 0;
  size_t max_inflight_body_bytes = 64 << 20;          // Over it: 503.
  int max_requests_per_connection = 1000;
  int retry_after_s = 1;  // Retry-After of the 503s.
};

class GuardedServer : public httplib::Server {
 public:
  GuardedServer(ConnectionLimits limits, prometheus::Registry& registry);
  ~GuardedServer() override;

  // Installs the pre-routing handler; the guard's own refusals (411, 400, 413, 503)
  // are answered before it is called.
  void SetPreRoutingHandler(HandlerWithResponse handler);

  // After bind_to_port / bind_to_any_port: httplib listens with a backlog of 5, so
  // in a burst of new connections all but the first few wait for the kernel's SYN-ACK
  // retransmission (a second); this widens it to max(max_connections, 128).
  bool WidenListenBacklog();

  // On a request's thread (handlers, the logger): whether the client of the current
  // request was sent a 408 (its deadline passed while it was read).
  static bool CurrentRequestTimedOut();

  size_t inflight_body_bytes() const { return inflight_bytes_.load(); }
  int open_connections() const { return open_connections_.load(); }

  // Why a connection or request was refused or cut short (metric label values).
  enum class Refusal { kConnections, kPerClient, kHeaderTimeout, kBodyTimeout, kMemoryBudget };

 private:
  class ConnectionPool;
  class DeadlineStream;
  struct Connection;

  bool process_and_close_socket(socket_t sock) override;
  bool stopping() const;  // Stop() has closed the listening socket.
  void ServeConnection(Connection& conn);
  // After the headers (httplib's setup_request): length checks and the budget.
  void OnHeaders(Connection& conn, httplib::Request& req);
  void Count(Refusal refusal);
  // Writes a canned 503 (Retry-After) and closes `sock` without blocking.
  void RefuseConnection(socket_t sock, const char* message);

  static thread_local Connection* current_;  // The connection this thread serves.

  const ConnectionLimits limits_;
  std::atomic<size_t> inflight_bytes_{0};
  std::atomic<int> open_connections_{0};
  absl::Mutex clients_mu_;
  std::map<std::string, int> per_client_ ABSL_GUARDED_BY(clients_mu_);  // Open connections by peer address.
  prometheus::Family<prometheus::Counter>& refused_;
  prometheus::Gauge& open_gauge_;
  prometheus::Gauge& inflight_gauge_;
};

}  // namespace skinlesion::gateway

#endif  // SERVICES_GATEWAY_GUARDED_SERVER_H_
