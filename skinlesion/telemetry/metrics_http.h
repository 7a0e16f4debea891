// A minimal HTTP endpoint serving Prometheus text at GET /metrics.
//
// Why not prometheus::Exposer (prometheus-cpp pull): Debian's civetweb creates its
// threads with a compile-time 100 KiB stack, and glibc refuses any thread whose
// stack cannot hold the process's static TLS; with LibTorch, OpenBLAS and glog
// loaded that is more than 100 KiB, so the Exposer fails with "Cannot create
// threads" in skinlesion-inference. This server runs its one thread with the
// default stack. Scrapes are answered one at a time (Prometheus scrapes every few
// seconds), each connection with a 5 s I/O timeout.
#ifndef SKINLESION_TELEMETRY_METRICS_HTTP_H_
#define SKINLESION_TELEMETRY_METRICS_HTTP_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"

namespace skinlesion::telemetry {

class MetricsHttpServer {
 public:
  // Listens on host:port (port 0: a free one, see port()). Unavailable when the
  // address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& host, int port, std::shared_ptr<prometheus::Collectable> collectable);
  ~MetricsHttpServer();  // Stops listening and joins the thread.
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsHttpServer(int fd, int port, std::shared_ptr<prometheus::Collectable> collectable)
      : fd_(fd), port_(port), collectable_(std::move(collectable)) {}
  void Loop();
  void Handle(int connection);

  int fd_;
  int port_;
  std::shared_ptr<prometheus::Collectable> collectable_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace skinlesion::telemetry

#endif  // SKINLESION_TELEMETRY_METRICS_HTTP_H_
