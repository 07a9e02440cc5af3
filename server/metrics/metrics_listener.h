// MetricsListener: serves GET /metrics (the Prometheus text format) over
// plain HTTP on an address of its own (--metrics_listen), with GNU
// libmicrohttpd from Debian's archive (libmicrohttpd12): one internal
// polling thread answers every connection, so a slow or stalled client holds
// nothing but its own socket; connections are capped and time out.
//
// Each scrape asks a MetricsSource for the text; virtgated's (ServerMetrics)
// makes no libvirt call, so a stalled libvirtd never holds a scrape.
//
// Built and shut down by Server (one thread).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/rpc/listen_address.h"

struct MHD_Daemon;

namespace virtgate {

// What a scrape returns. Implementations are thread-safe and never block on
// libvirt.
class MetricsSource {
 public:
  virtual ~MetricsSource() = default;
  virtual std::string Scrape() const = 0;
};

class MetricsListener {
 public:
  // Listens on `address`, a TCP one (Server refuses a unix socket for
  // --metrics_listen before anything starts); its flag names every error.
  static absl::StatusOr<std::unique_ptr<MetricsListener>> Start(
      const ListenAddress& address, std::shared_ptr<const MetricsSource> source);
  ~MetricsListener();  // Shutdown()

  // Where Prometheus scrapes: "127.0.0.1:41234" (port resolved).
  const std::string& address() const { return address_; }
  int port() const { return port_; }

  // Stops listening and closes open connections. Idempotent.
  void Shutdown();

 private:
  explicit MetricsListener(std::shared_ptr<const MetricsSource> source)
      : source_(std::move(source)) {}

  const std::shared_ptr<const MetricsSource> source_;
  MHD_Daemon* daemon_ = nullptr;
  std::string address_;
  int port_ = 0;
};

}  // namespace virtgate
