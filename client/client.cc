#include "virtgate/client.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <grpcpp/support/sync_stream.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace virtgate {
namespace {

// Marks statuses built by Client for transport failures (see
// IsConnectionError). The payload's content is irrelevant, only its presence.
constexpr absl::string_view kConnectionErrorPayload = "virtgate.client/connection-error";

// A listing page may hold up to the server's page cap (5000) domains; keep
// well clear of gRPC's 4 MiB default so long names never break a listing.
constexpr int kMaxReceiveMessageBytes = 64 << 20;

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", what, " ", path, ": ", std::strerror(errno)));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(
    const ClientOptions& options) {
  if (options.tls_ca_file.empty() && options.tls_cert_file.empty() &&
      options.tls_key_file.empty() && options.tls_server_name.empty()) {
    return grpc::InsecureChannelCredentials();
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "a TLS client certificate needs both a certificate file and a key file");
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadFile(options.tls_ca_file, "TLS CA file");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadFile(options.tls_cert_file, "TLS certificate file");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile(options.tls_key_file, "TLS key file");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(ssl);
}

// gRPC's transport messages are long and name the resolved address
// ("failed to connect to all addresses; last error: UNKNOWN: ipv4:...:
// Failed to connect to remote host: Connection refused"); users need the
// reason only. Known causes get a short fixed text, others keep gRPC's
// last error without its code and address prefix.
std::string ShortReason(absl::string_view message) {
  struct Known {
    absl::string_view needle;
    absl::string_view reason;
  };
  static constexpr Known kKnown[] = {
      {"Connection refused", "connection refused"},
      {"No such file or directory", "no such file or directory"},
      {"Permission denied", "permission denied"},
      {"Network is unreachable", "network is unreachable"},
      {"No route to host", "no route to host"},
      {"Connection reset", "connection reset"},
      {"Broken pipe", "connection reset"},
      {"Socket closed", "connection closed"},
      {"GOAWAY", "connection closed by the server"},
      {"Handshake failed", "TLS handshake failed"},
      {"handshake", "TLS handshake failed"},
      {"DNS resolution failed", "cannot resolve the host name"},
      {"Timeout occurred", "connection timed out"},
      {"timed out", "connection timed out"},
  };
  for (const Known& known : kKnown) {
    if (absl::StrContains(message, known.needle)) return std::string(known.reason);
  }
  absl::string_view reason = message;
  const size_t last_error = reason.rfind("last error: ");
  if (last_error != absl::string_view::npos) {
    reason.remove_prefix(last_error + std::strlen("last error: "));
    absl::ConsumePrefix(&reason, "UNKNOWN: ");
    // What is left is "<address>: <reason>"; the address is in our message.
    const size_t colon = reason.rfind(": ");
    if (colon != absl::string_view::npos) reason.remove_prefix(colon + 2);
  }
  std::string out(reason);
  if (!out.empty()) out[0] = absl::ascii_tolower(out[0]);
  return out;
}

// Whether an UNAVAILABLE status came from gRPC's own transport rather than
// from the server. virtgated itself sends UNAVAILABLE when libvirt is down,
// with libvirt's text (which may well say "Connection refused"), so match
// only on gRPC's own phrasing, at the start of the message.
enum class Transport { kNone, kUnreachable, kLost };
Transport ClassifyUnavailable(absl::string_view message) {
  static constexpr absl::string_view kUnreachable[] = {
      "failed to connect to all addresses",
      "DNS resolution failed",
      "empty address list",
      "connections to all backends failing",
  };
  static constexpr absl::string_view kLost[] = {
      "Socket closed", "Connection reset", "Broken pipe", "GOAWAY",
      "keepalive watchdog timeout", "Endpoint read failed", "Transport closed",
  };
  for (absl::string_view prefix : kUnreachable) {
    if (absl::StartsWith(message, prefix)) return Transport::kUnreachable;
  }
  for (absl::string_view prefix : kLost) {
    if (absl::StartsWith(message, prefix)) return Transport::kLost;
  }
  return Transport::kNone;
}

absl::Status ConnectionError(absl::StatusCode code, std::string message) {
  absl::Status status(code, message);
  status.SetPayload(kConnectionErrorPayload, absl::Cord("1"));
  return status;
}

// Trailing metadata virtgated sets when it ends a watch: the epoch, and the
// last sequence the stream accounted for (sent, or skipped as not needed).
constexpr absl::string_view kEpochTrailer = "virtgate-epoch";
constexpr absl::string_view kLastSequenceTrailer = "virtgate-last-sequence";

std::string MetadataValue(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                          absl::string_view key) {
  auto it = metadata.find(grpc::string_ref(key.data(), key.size()));
  if (it == metadata.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

// Whether a watch that ended with `status` (not cancelled by the caller) is
// worth resuming: the server or the way to it failed, rather than the server
// refusing the request.
bool IsTransientWatchEnd(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::OK:                  // ended without a reason: resume
    case grpc::StatusCode::UNAVAILABLE:         // unreachable, lost, shutting down
    case grpc::StatusCode::RESOURCE_EXHAUSTED:  // fell behind
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::DEADLINE_EXCEEDED:   // the stream has none: a proxy's
    case grpc::StatusCode::CANCELLED:           // not the caller's: server or proxy
      return true;
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::INTERNAL: {
      // A stream reset by the transport or a proxy, not the server's answer.
      const std::string& message = status.error_message();
      return absl::StrContains(message, "Stream removed") ||
             absl::StrContains(message, "RST_STREAM") ||
             absl::StrContains(message, "Socket closed") ||
             absl::StrContains(message, "Connection reset");
    }
    default:
      return false;
  }
}

bool IsHexDigits(absl::string_view text) {
  for (char c : text) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

bool IsConnectionError(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kConnectionErrorPayload).has_value();
}

bool IsUuid(absl::string_view text) {
  if (text.size() == 32) return IsHexDigits(text);
  if (text.size() != 36) return false;
  for (size_t dash : {8, 13, 18, 23}) {
    if (text[dash] != '-') return false;
  }
  return IsHexDigits(text.substr(0, 8)) && IsHexDigits(text.substr(9, 4)) &&
         IsHexDigits(text.substr(14, 4)) && IsHexDigits(text.substr(19, 4)) &&
         IsHexDigits(text.substr(24, 12));
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& target,
                                                        ClientOptions options) {
  if (target.empty()) return absl::InvalidArgumentError("empty server address");
  if (target == "unix:" || target == "unix://") {
    return absl::InvalidArgumentError(
        absl::StrCat("server address ", target, " has no socket path"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "timeout must be positive, got ", absl::FormatDuration(options.timeout)));
  }
  if (options.watch_initial_backoff <= absl::ZeroDuration() ||
      options.watch_max_backoff < options.watch_initial_backoff ||
      options.watch_max_backoff == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "watch backoff must satisfy 0 < initial <= max < infinity, got initial ",
        absl::FormatDuration(options.watch_initial_backoff), ", max ",
        absl::FormatDuration(options.watch_max_backoff)));
  }
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = Credentials(options);
  if (!credentials.ok()) return credentials.status();

  grpc::ChannelArguments args;
  if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
  args.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  // gRPC waits out its own reconnect backoff (growing to 2 minutes) before
  // it dials a failed server again, failing calls fast meanwhile; a watch
  // retrying every few seconds needs the channel to keep up with it.
  const auto clamp_ms = [](absl::Duration d) {
    return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d), 1 << 30));
  };
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              std::max(clamp_ms(options.watch_initial_backoff), 1));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, std::max(clamp_ms(options.watch_max_backoff), 1));
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(target, *credentials, args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create a channel to ", target));
  }
  return std::unique_ptr<Client>(new Client(target, std::move(options), std::move(channel)));
}

Client::Client(std::string target, ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : target_(std::move(target)),
      options_(std::move(options)),
      channel_(std::move(channel)),
      hypervisor_(v1::Hypervisor::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

void Client::PrepareContext(grpc::ClientContext* context) const {
  context->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
}

absl::Status Client::FromGrpc(const grpc::Status& status) const {
  // grpc::StatusCode and absl::StatusCode share the canonical numbering.
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  const std::string& message = status.error_message();
  if (code == absl::StatusCode::kUnavailable) {
    switch (ClassifyUnavailable(message)) {
      case Transport::kUnreachable:
        return ConnectionError(
            code, absl::StrCat("cannot reach ", target_, ": ", ShortReason(message)));
      case Transport::kLost:
        return ConnectionError(
            code, absl::StrCat("lost connection to ", target_, ": ", ShortReason(message)));
      case Transport::kNone:
        break;
    }
  }
  // "Deadline Exceeded" is gRPC's own text; a server-sent DEADLINE_EXCEEDED
  // carries the server's explanation and passes through below. Whether the
  // channel ever got connected tells a silent network from a slow server.
  if (code == absl::StatusCode::kDeadlineExceeded && message == "Deadline Exceeded") {
    const std::string after = absl::FormatDuration(options_.timeout);
    if (channel_->GetState(/*try_to_connect=*/false) != GRPC_CHANNEL_READY) {
      return ConnectionError(code,
                             absl::StrCat("cannot reach ", target_, ": timed out after ", after));
    }
    return absl::Status(code, absl::StrCat("no answer from ", target_, " within ", after,
                                           " (deadline exceeded)"));
  }
  if (message.empty()) {
    return absl::Status(code, absl::StrCat(absl::StatusCodeToString(code), " from ", target_));
  }
  return absl::Status(code, message);
}

absl::StatusOr<v1::ListDomainsResponse> Client::ListDomainsPage(
    const v1::ListDomainsRequest& request) const {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::ListDomainsResponse response;
  const grpc::Status status = hypervisor_->ListDomains(&context, request, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

absl::StatusOr<std::vector<v1::Domain>> Client::ListDomains(v1::ListDomainsRequest filter) const {
  std::vector<v1::Domain> domains;
  while (true) {
    absl::StatusOr<v1::ListDomainsResponse> page = ListDomainsPage(filter);
    if (!page.ok()) return page.status();
    domains.insert(domains.end(), std::make_move_iterator(page->mutable_domains()->begin()),
                   std::make_move_iterator(page->mutable_domains()->end()));
    if (page->next_page_token().empty()) return domains;
    // A server handing back the token it was given would loop us forever.
    if (page->next_page_token() == filter.page_token()) {
      return absl::InternalError(
          absl::StrCat(target_, " returned the same page token twice; listing aborted"));
    }
    filter.set_page_token(page->next_page_token());
  }
}

absl::StatusOr<v1::Domain> Client::GetDomain(const std::string& name_or_uuid,
                                             v1::ReadConsistency consistency) const {
  if (name_or_uuid.empty()) {
    return absl::InvalidArgumentError("empty domain name or UUID");
  }
  v1::GetDomainRequest request;
  request.set_consistency(consistency);
  if (IsUuid(name_or_uuid)) {
    request.set_uuid(name_or_uuid);
  } else {
    request.set_name(name_or_uuid);
  }
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::Domain domain;
  const grpc::Status status = hypervisor_->GetDomain(&context, request, &domain);
  if (!status.ok()) return FromGrpc(status);
  return domain;
}

absl::StatusOr<v1::HostInfo> Client::GetHostInfo() const {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::HostInfo info;
  const grpc::Status status = hypervisor_->GetHostInfo(&context, v1::GetHostInfoRequest(), &info);
  if (!status.ok()) return FromGrpc(status);
  return info;
}

absl::StatusOr<bool> Client::CheckHealth(const std::string& service) const {
  grpc::ClientContext context;
  PrepareContext(&context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = health_->Check(&context, request, &response);
  if (!status.ok()) return FromGrpc(status);
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

// --- WatchSession

void WatchSession::Cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  // TryCancel only marks the call; it never waits for the network.
  if (context_ != nullptr) context_->TryCancel();
}

bool WatchSession::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

bool WatchSession::Attach(grpc::ClientContext* context) {
  std::lock_guard<std::mutex> lock(mu_);
  if (cancelled_) return false;
  context_ = context;
  return true;
}

void WatchSession::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  context_ = nullptr;
}

// --- WatchLifecycle

absl::Status Client::WatchLifecycle(v1::WatchLifecycleRequest request,
                                    const WatchCallbacks& callbacks,
                                    WatchSession* session) const {
  if (!callbacks.on_message) {
    return absl::InvalidArgumentError("WatchLifecycle needs an on_message callback");
  }
  const auto cancelled = [session] { return session != nullptr && session->cancelled(); };

  // Where the next subscription continues: after `sequence` of `epoch`.
  struct Position {
    std::string epoch;
    uint64_t sequence = 0;
  };
  std::optional<Position> position;
  if (request.resume_after_sequence() > 0 || !request.resume_epoch().empty()) {
    position = Position{request.resume_epoch(), request.resume_after_sequence()};
  }
  // Whether the next subscription asks for initial states: until a
  // `synced` was delivered for the caller's send_initial_state, and after a
  // resync.
  bool want_snapshot = request.send_initial_state();
  // The filters (and coalescing) every subscription repeats.
  v1::WatchLifecycleRequest base = std::move(request);
  base.clear_send_initial_state();
  base.clear_resume_after_sequence();
  base.clear_resume_epoch();

  std::mt19937_64 random(std::random_device{}());
  int failures = 0;  // consecutive attempts that delivered nothing
  const auto next_delay = [&] {
    absl::Duration delay = options_.watch_initial_backoff;
    for (int i = 0; i < failures && delay < options_.watch_max_backoff; ++i) delay *= 2;
    delay = std::min(delay, options_.watch_max_backoff);
    ++failures;
    return delay * std::uniform_real_distribution<double>(0.5, 1.0)(random);
  };

  while (true) {
    v1::WatchLifecycleRequest attempt = base;
    if (want_snapshot) attempt.set_send_initial_state(true);
    const bool resuming = position.has_value();
    if (resuming) {
      attempt.set_resume_after_sequence(position->sequence);
      attempt.set_resume_epoch(position->epoch);
    }

    grpc::ClientContext context;  // No deadline: the stream lives until cancelled.
    if (session != nullptr && !session->Attach(&context)) return absl::OkStatus();
    std::unique_ptr<grpc::ClientReader<v1::WatchLifecycleResponse>> reader =
        hypervisor_->WatchLifecycle(&context, attempt);
    bool delivered = false;         // anything passed to the caller on this stream
    bool snapshot_started = false;  // an `initial` of an unfinished snapshot was
    v1::WatchLifecycleResponse message;
    while (reader->Read(&message)) {
      if (cancelled()) break;  // Cancel() has cancelled the stream too.
      switch (message.payload_case()) {
        case v1::WatchLifecycleResponse::kEvent:
        case v1::WatchLifecycleResponse::kConnection:
          // A resumed stream starts after the position; never hand out a
          // sequence twice even if a server replayed too much.
          if (position.has_value() && message.epoch() == position->epoch &&
              message.sequence() <= position->sequence) {
            continue;
          }
          position = Position{message.epoch(), message.sequence()};
          break;
        case v1::WatchLifecycleResponse::kInitial:
          snapshot_started = true;
          break;
        case v1::WatchLifecycleResponse::kSynced:
          // Initial states reflect everything up to this sequence.
          position = Position{message.epoch(), message.sequence()};
          want_snapshot = false;
          snapshot_started = false;
          break;
        case v1::WatchLifecycleResponse::PAYLOAD_NOT_SET:
          break;  // From a newer server: passed on, position untouched.
      }
      delivered = true;
      callbacks.on_message(message);
    }
    const grpc::Status status = reader->Finish();
    if (session != nullptr) session->Detach();
    if (cancelled()) return absl::OkStatus();
    if (delivered) failures = 0;

    // OUT_OF_RANGE: the resume point is gone. INVALID_ARGUMENT for a
    // resume from sequence 0 (a subscription made before the epoch's first
    // event, which nothing delivered since): a server that cannot express
    // "from the start of the epoch". Either way, re-list, at once (the
    // server is up).
    if (resuming &&
        (status.error_code() == grpc::StatusCode::OUT_OF_RANGE ||
         (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT && position->sequence == 0))) {
      const std::string why =
          absl::StrCat("cannot resume after sequence ", position->sequence, " of epoch ",
                       position->epoch.empty() ? "(none)" : position->epoch, ": ",
                       status.error_message());
      position.reset();
      want_snapshot = true;
      if (callbacks.on_resync) callbacks.on_resync(why);
      continue;
    }
    if (!IsTransientWatchEnd(status)) return FromGrpc(status);

    absl::Status why = status.ok() ? absl::UnavailableError(absl::StrCat(
                                         target_, " ended the watch without a reason"))
                                   : FromGrpc(status);
    if (want_snapshot && snapshot_started) {
      // Part of a snapshot is useless; the next one starts over.
      if (callbacks.on_resync) {
        callbacks.on_resync(absl::StrCat("the stream ended during the initial states (",
                                         why.message(), "); listing again"));
      }
    } else if (!want_snapshot) {
      // The server's account of where the stream got to: a position when
      // nothing was delivered yet, and past events it skipped on purpose.
      const auto& trailers = context.GetServerTrailingMetadata();
      const std::string epoch = MetadataValue(trailers, kEpochTrailer);
      uint64_t sequence = 0;
      if (!epoch.empty() &&
          absl::SimpleAtoi(MetadataValue(trailers, kLastSequenceTrailer), &sequence) &&
          (!position.has_value() ||
           (position->epoch == epoch && sequence > position->sequence))) {
        position = Position{epoch, sequence};
      }
    }
    const absl::Duration delay = next_delay();
    if (callbacks.on_retry) callbacks.on_retry(why, delay);
    if (WaitBeforeRetry(delay, session)) return absl::OkStatus();
  }
}

bool Client::WaitBeforeRetry(absl::Duration delay, WatchSession* session) const {
  // Checked this often for Cancel(); bounds how long Cancel() may take.
  constexpr absl::Duration kSlice = absl::Milliseconds(25);
  const absl::Time until = absl::Now() + delay;
  // Waiting on the channel rather than sleeping keeps gRPC's I/O going:
  // with the synchronous API nothing else polls the channel between calls,
  // and a reconnection would only be noticed by gRPC's backup poller, which
  // runs every 5 seconds. try_to_connect: an idle channel (after the server
  // said goodbye) starts reconnecting now.
  grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
  bool was_down = state != GRPC_CHANNEL_READY;
  while (true) {
    if (session != nullptr && session->cancelled()) return true;
    const absl::Time now = absl::Now();
    if (now >= until) return false;
    // The channel went down and is back: no reason to wait out the rest.
    // (A stream a connected server ended, e.g. for falling behind, waits.)
    if (was_down && state == GRPC_CHANNEL_READY) return false;
    if (channel_->WaitForStateChange(state, absl::ToChronoTime(std::min(until, now + kSlice)))) {
      state = channel_->GetState(/*try_to_connect=*/true);
      was_down = was_down || state != GRPC_CHANNEL_READY;
    }
  }
}

}  // namespace virtgate
