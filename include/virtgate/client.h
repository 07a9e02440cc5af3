// C++ client library for virtgated, the gRPC server that exposes one
// hypervisor through libvirt (service virtgate.v1.Hypervisor).
//
// Client wraps one gRPC channel and turns every call into an
// absl::Status / absl::StatusOr with a per-call deadline, so callers (the
// virtgatectl CLI, orchestrators, tests) never handle grpc::Status or
// ClientContext themselves.
//
//   absl::StatusOr<std::unique_ptr<virtgate::Client>> client =
//       virtgate::Client::Connect("unix:/run/virtgate/virtgate.sock");
//   if (!client.ok()) return client.status();
//   absl::StatusOr<virtgate::v1::Domain> domain = (*client)->GetDomain("test");
//
// Errors keep the gRPC status code (absl::StatusCode has the same numbers).
// A message the server sent is passed through unchanged. When the server
// cannot be reached, the message reads "cannot reach <target>: <reason>"
// (e.g. "connection refused", "no such file or directory") and
// IsConnectionError() is true for it, so callers can tell "the server said
// no" from "there is no server".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "virtgate/v1/hypervisor.grpc.pb.h"

namespace virtgate {

struct ClientOptions {
  // Deadline of each RPC (each page of a listing gets its own). Must be > 0.
  absl::Duration timeout = absl::Seconds(10);

  // TLS. All empty: plaintext (what virtgated serves on loopback and unix
  // sockets). Any set: TLS; tls_ca_file verifies the server (empty: the
  // system roots), and tls_cert_file + tls_key_file (both or neither) are
  // the client certificate for servers that require mTLS. Files are PEM.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
};

// True if `status` came from Client and says the server could not be reached
// (or the connection to it broke), rather than an error the server returned.
bool IsConnectionError(const absl::Status& status);

// True if `text` is a UUID: 32 hex digits, either plain or in the canonical
// 8-4-4-4-12 dashed form, any case.
bool IsUuid(absl::string_view text);

// A connection to one virtgated. Thread-safe: every method may be called
// from any number of threads at once (the gRPC channel and stubs are
// thread-safe and Client has no other mutable state). Destroying a Client
// while calls are in flight on other threads is not allowed.
class Client {
 public:
  // Creates a client for `target`: "host:port", "[v6addr]:port" or
  // "unix:/path" (any gRPC target URI works). The channel connects lazily,
  // so an unreachable server shows up as an error of the first call, not
  // here; Connect fails only for bad options or unreadable TLS files
  // (INVALID_ARGUMENT).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& target,
                                                         ClientOptions options = {});

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Returns every domain matching the filters in `filter`, following
  // next_page_token to the end. filter.page_size sets the page size (0: the
  // server default); filter.page_token is where to start (normally empty,
  // the first page). Each page is its own
  // RPC with its own deadline, so a long listing is not cut off by one
  // timeout; the result is not one atomic snapshot (see the proto for what
  // the server guarantees across pages).
  absl::StatusOr<std::vector<v1::Domain>> ListDomains(v1::ListDomainsRequest filter) const;

  // One ListDomains RPC: one page, as the server returned it.
  absl::StatusOr<v1::ListDomainsResponse> ListDomainsPage(
      const v1::ListDomainsRequest& request) const;

  // Looks a domain up by UUID if `name_or_uuid` is one (see IsUuid), else by
  // name. NOT_FOUND when there is no such domain.
  absl::StatusOr<v1::Domain> GetDomain(const std::string& name_or_uuid) const;

  absl::StatusOr<v1::HostInfo> GetHostInfo() const;

  // Asks grpc.health.v1.Health/Check about `service` ("" is the server as a
  // whole). true for SERVING, false for any other reported status; an error
  // if the call fails (NOT_FOUND for a service the server does not know).
  absl::StatusOr<bool> CheckHealth(const std::string& service = "") const;

  const std::string& target() const { return target_; }
  const ClientOptions& options() const { return options_; }

 private:
  Client(std::string target, ClientOptions options, std::shared_ptr<grpc::Channel> channel);

  // A context carrying this client's per-call deadline.
  void PrepareContext(grpc::ClientContext* context) const;

  // Converts a failed call's status, naming `target_` for transport errors.
  absl::Status FromGrpc(const grpc::Status& status) const;

  const std::string target_;
  const ClientOptions options_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::Hypervisor::Stub> hypervisor_;
  const std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace virtgate
