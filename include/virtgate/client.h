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
//
// WatchLifecycle is the one long-lived call: it follows the server's event
// stream across reconnections and server restarts until the caller cancels
// it (see WatchSession) or the server refuses it for good.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
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
  // Not applied to WatchLifecycle, whose stream lives until it is cancelled.
  absl::Duration timeout = absl::Seconds(10);

  // WatchLifecycle's reconnect delay: the first retry after a failure waits
  // about watch_initial_backoff, each further consecutive failure doubles it
  // up to watch_max_backoff; every delay is randomized to 50-100% of that
  // (jitter), so many watchers of a restarted server do not return in step.
  // A stream that delivered a message resets the delay. Both must be > 0,
  // initial <= max. The channel's own reconnect backoff is capped at
  // watch_max_backoff too (gRPC's default grows to 2 minutes).
  absl::Duration watch_initial_backoff = absl::Milliseconds(100);
  absl::Duration watch_max_backoff = absl::Seconds(5);

  // TLS. All empty: plaintext (what virtgated serves on loopback and unix
  // sockets). Any set: TLS; tls_ca_file verifies the server (empty: the
  // system roots), and tls_cert_file + tls_key_file (both or neither) are
  // the client certificate for servers that require mTLS. Files are PEM.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // The name the server's certificate must carry, when it is not the host
  // in the address (e.g. dialling 10.0.0.7:50051 for a certificate issued
  // to node-7.example). Implies TLS.
  std::string tls_server_name;
};

// True if `status` came from Client and says the server could not be reached
// (or the connection to it broke), rather than an error the server returned.
bool IsConnectionError(const absl::Status& status);

// True if `text` is a UUID: 32 hex digits, either plain or in the canonical
// 8-4-4-4-12 dashed form, any case.
bool IsUuid(absl::string_view text);

// What WatchLifecycle reports to its caller. All callbacks run on the thread
// that called WatchLifecycle, one at a time, in stream order, with no lock of
// the library held: they may call WatchSession::Cancel(). They should return
// quickly; while one runs, the stream is not read (a watcher that falls too
// far behind is cut off by the server and resumed, which is harmless).
struct WatchCallbacks {
  // Required. Every message of the stream, exactly once and in order:
  // `event`s and `connection` changes (each with its epoch and sequence),
  // and after a send_initial_state request or a resync, one `initial` per
  // matching domain followed by one `synced` marker. Messages of a newer
  // server with a payload this library does not know are passed on too.
  std::function<void(const v1::WatchLifecycleResponse& message)> on_message;

  // Optional. The watch could not continue where it left off (the server
  // restarted and has a new epoch, its history no longer reaches back to the
  // last sequence delivered, or the stream broke in the middle of the initial
  // states), so events may have been missed. What follows is a fresh view:
  // one `initial` per domain that exists now, then `synced`, then live
  // events; the caller should replace (not merge) what it knew. `why` is one
  // line naming the cause, e.g. the server's OUT_OF_RANGE message and the
  // epoch and sequence that could not be resumed.
  std::function<void(const std::string& why)> on_resync;

  // Optional, for logging and tests. A transient failure (`why`, as the
  // library would report it, e.g. "cannot reach ADDR: connection refused")
  // ended the stream or prevented it; the watch tries again after `delay`,
  // or sooner once the channel has reconnected, and resumes.
  std::function<void(const absl::Status& why, absl::Duration delay)> on_retry;
};

// Handle to one running WatchLifecycle call, for stopping it from another
// thread (or from a callback). Create it before the call, pass its address,
// and keep it alive until the call returned. One session serves one call;
// once cancelled it stays cancelled.
class WatchSession {
 public:
  WatchSession() = default;
  WatchSession(const WatchSession&) = delete;
  WatchSession& operator=(const WatchSession&) = delete;

  // Makes WatchLifecycle return OkStatus promptly (within milliseconds): it
  // cancels the open stream, or interrupts the wait before a reconnection. No callback is
  // called after WatchLifecycle has seen the cancellation (one running at
  // the time completes). Thread-safe, idempotent, never blocks on the
  // network; calling it before WatchLifecycle starts makes that call return
  // OkStatus at once.
  void Cancel();

  bool cancelled() const;

 private:
  friend class Client;

  // Registers the context of the stream about to start; false (and nothing
  // registered) if already cancelled.
  bool Attach(grpc::ClientContext* context);
  void Detach();

  mutable std::mutex mu_;
  bool cancelled_ = false;                  // guarded by mu_
  grpc::ClientContext* context_ = nullptr;  // guarded by mu_
};

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
  // name. NOT_FOUND when there is no such domain. CACHED answers from the
  // server's domain cache without a libvirt call (see v1::ReadConsistency).
  absl::StatusOr<v1::Domain> GetDomain(
      const std::string& name_or_uuid,
      v1::ReadConsistency consistency = v1::READ_CONSISTENCY_FRESH) const;

  absl::StatusOr<v1::HostInfo> GetHostInfo() const;

  // Asks grpc.health.v1.Health/Check about `service` ("" is the server as a
  // whole). true for SERVING, false for any other reported status; an error
  // if the call fails (NOT_FOUND for a service the server does not know).
  absl::StatusOr<bool> CheckHealth(const std::string& service = "") const;

  // Watches domain lifecycle events, blocking the calling thread until
  // `session` is cancelled (returns OkStatus) or the watch fails for good
  // (returns that error). `request` holds the filters (domain_uuids,
  // domain_names, event_types), optionally send_initial_state, optionally a
  // resume point (resume_after_sequence + resume_epoch, e.g. saved from an
  // earlier run) and coalesce_ms; see the proto. `session` may be null: then
  // only a permanent error ends the call.
  //
  // The stream has no deadline (ClientOptions::timeout does not apply). The
  // library remembers the epoch and sequence of the last message delivered,
  // and when the stream ends or cannot be opened for a transient reason --
  // UNAVAILABLE (server unreachable, connection lost, server shutting down),
  // RESOURCE_EXHAUSTED (the watcher fell behind), ABORTED, DEADLINE_EXCEEDED
  // or CANCELLED not asked for by the caller, an unexpected end with OK, a
  // reset stream -- it reconnects after a backoff (see ClientOptions) and
  // resumes after that sequence, so no message is lost or delivered twice.
  // (Before anything was delivered it resumes from the position the server
  // reported in the stream's trailers, if any, else subscribes anew.)
  //
  // When the server cannot resume (OUT_OF_RANGE: it restarted with a new
  // epoch, or its history no longer reaches back far enough; or
  // INVALID_ARGUMENT for a resume from sequence 0, i.e. a stream that began
  // before the epoch's first event, which older servers cannot express),
  // the library calls on_resync and subscribes again with
  // send_initial_state (same filters, no resume point): initial states,
  // synced, then live events. The same happens if the stream breaks while
  // initial states are being delivered. A request with send_initial_state gets its initial states
  // once; later reconnections resume after them.
  //
  // Every other failure is permanent and returned as it came from the
  // server (e.g. INVALID_ARGUMENT for a malformed UUID filter, UNIMPLEMENTED
  // for an option the server does not support, PERMISSION_DENIED); so is
  // OUT_OF_RANGE for a request that asked for no resume. INVALID_ARGUMENT
  // without a call if callbacks.on_message is empty.
  absl::Status WatchLifecycle(v1::WatchLifecycleRequest request, const WatchCallbacks& callbacks,
                              WatchSession* session = nullptr) const;

  const std::string& target() const { return target_; }
  const ClientOptions& options() const { return options_; }

 private:
  Client(std::string target, ClientOptions options, std::shared_ptr<grpc::Channel> channel);

  // A context carrying this client's per-call deadline.
  void PrepareContext(grpc::ClientContext* context) const;

  // Converts a failed call's status, naming `target_` for transport errors.
  absl::Status FromGrpc(const grpc::Status& status) const;

  // WatchLifecycle's wait before reconnecting: `delay`, less if the channel
  // reconnects meanwhile. True if `session` was cancelled.
  bool WaitBeforeRetry(absl::Duration delay, WatchSession* session) const;

  const std::string target_;
  const ClientOptions options_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::Hypervisor::Stub> hypervisor_;
  const std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace virtgate
