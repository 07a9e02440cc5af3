#include "tests/support/stalling_proxy.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace virtgate::testing {
namespace {

// libvirt's RPC framing: a 4-byte big-endian length (itself included), then
// program, version, procedure, ... (each 4 bytes, big-endian).
constexpr uint32_t kRemoteProgram = 0x20008086;
// REMOTE_PROC_CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY (libvirt 9.0).
constexpr uint32_t kRegisterEventCallback = 316;
constexpr size_t kHeaderBytes = 28;

uint32_t BigEndian32(const std::string& s, size_t at) {
  return static_cast<uint32_t>(static_cast<unsigned char>(s[at])) << 24 |
         static_cast<uint32_t>(static_cast<unsigned char>(s[at + 1])) << 16 |
         static_cast<uint32_t>(static_cast<unsigned char>(s[at + 2])) << 8 |
         static_cast<uint32_t>(static_cast<unsigned char>(s[at + 3]));
}

sockaddr_un Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  return addr;
}

// One proxied connection.
struct Pair {
  int client = -1;
  int server = -1;
  std::string from_client;  // read from the client, not yet split into packets
  std::string to_server;    // whole packets to write to libvirtd
  std::string to_client;
  bool held = false;
  bool closed = false;

  // Moves whole packets from from_client to to_server; stops after a held one.
  void SplitPackets(bool hold_events) {
    while (!held && from_client.size() >= 4) {
      const uint32_t length = BigEndian32(from_client, 0);
      if (length < 4 || from_client.size() < length) return;
      const bool registers = length >= kHeaderBytes && BigEndian32(from_client, 4) == kRemoteProgram &&
                             BigEndian32(from_client, 12) == kRegisterEventCallback;
      to_server.append(from_client, 0, length);
      from_client.erase(0, length);
      if (registers && hold_events) held = true;
    }
  }
};

// Writes what it can of `*pending` to `fd`; false when the peer is gone.
bool Flush(int fd, std::string* pending) {
  while (!pending->empty()) {
    const ssize_t n = ::send(fd, pending->data(), pending->size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
    pending->erase(0, n);
  }
  return true;
}

// Appends what `fd` has to `*into`; false at end of file or error.
bool Drain(int fd, std::string* into) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      into->append(buf, n);
      continue;
    }
    if (n == 0) return false;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

}  // namespace

struct StallingProxy::State {
  std::string target;
  int listener = -1;
  int wake[2] = {-1, -1};
  mutable absl::Mutex mu;
  bool plain = false;  // any bytes (gRPC): no libvirt framing, never held
  bool hold_events ABSL_GUARDED_BY(mu) = false;
  bool refuse ABSL_GUARDED_BY(mu) = false;
  bool drop ABSL_GUARDED_BY(mu) = false;
  bool stopping ABSL_GUARDED_BY(mu) = false;
  int held ABSL_GUARDED_BY(mu) = 0;

  void Poke() {
    const char c = 0;
    (void)!::write(wake[1], &c, 1);
  }

  void Run() {
    std::vector<Pair> pairs;
    for (;;) {
      bool hold, dropping;
      {
        absl::MutexLock lock(&mu);
        if (stopping) break;
        hold = hold_events;
        dropping = drop;
      }
      if (dropping) {
        for (Pair& p : pairs) p.closed = true;
      }
      if (!hold) {
        for (Pair& p : pairs) p.held = false;
      }
      std::vector<pollfd> fds = {{listener, POLLIN, 0}, {wake[0], POLLIN, 0}};
      for (const Pair& p : pairs) {
        fds.push_back({p.client, static_cast<short>(
                                     (p.held ? 0 : POLLIN) |
                                     (!p.held && !p.to_client.empty() ? POLLOUT : 0)),
                       0});
        fds.push_back({p.server, static_cast<short>(
                                     (p.held ? 0 : POLLIN) | (!p.to_server.empty() ? POLLOUT : 0)),
                       0});
      }
      ::poll(fds.data(), fds.size(), 1000);
      if (fds[1].revents & POLLIN) {
        char buf[64];
        (void)!::read(wake[0], buf, sizeof buf);
      }
      const size_t polled = pairs.size();  // a pair accepted now is polled next time round
      if (fds[0].revents & POLLIN) Accept(&pairs);
      for (size_t i = 0; i < polled; ++i) {
        Pair& p = pairs[i];
        const pollfd& c = fds[2 + 2 * i];
        const pollfd& s = fds[3 + 2 * i];
        if (!p.held && (c.revents & (POLLIN | POLLHUP | POLLERR))) {
          if (!Drain(p.client, &p.from_client)) p.closed = true;
        }
        if (plain) {
          p.to_server.append(p.from_client);
          p.from_client.clear();
        } else {
          p.SplitPackets(hold);
        }
        if (!Flush(p.server, &p.to_server)) p.closed = true;
        if (!p.held && (s.revents & (POLLIN | POLLHUP | POLLERR))) {
          if (!Drain(p.server, &p.to_client)) p.closed = true;
        }
        if (!p.held && !Flush(p.client, &p.to_client)) p.closed = true;
        // A peer gone while held: poll would report it at once, forever.
        if (p.held && ((c.revents | s.revents) & (POLLHUP | POLLERR))) p.closed = true;
      }
      int now_held = 0;
      for (auto it = pairs.begin(); it != pairs.end();) {
        if (it->closed) {
          ::close(it->client);
          ::close(it->server);
          it = pairs.erase(it);
        } else {
          now_held += it->held ? 1 : 0;
          ++it;
        }
      }
      absl::MutexLock lock(&mu);
      held = now_held;
      if (dropping) drop = false;  // DropAll returns: they are closed
    }
    for (Pair& p : pairs) {
      ::close(p.client);
      ::close(p.server);
    }
  }

  void Accept(std::vector<Pair>* pairs) {
    const int client = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (client < 0) return;
    bool refusing;
    {
      absl::MutexLock lock(&mu);
      refusing = refuse;
    }
    if (refusing) {
      ::close(client);  // the client sees its connection close at once
      return;
    }
    const int server = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr = Address(target);
    if (server < 0 || ::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
      ::close(client);
      if (server >= 0) ::close(server);
      return;  // libvirtd is not there: the client sees its connection close
    }
    ::fcntl(server, F_SETFL, O_NONBLOCK);
    Pair p;
    p.client = client;
    p.server = server;
    pairs->push_back(std::move(p));
  }
};

absl::StatusOr<std::unique_ptr<StallingProxy>> StallingProxy::StartPlain(
    const std::string& target_path, const std::string& listen_path) {
  return Start(target_path, listen_path, /*plain=*/true);
}

absl::StatusOr<std::unique_ptr<StallingProxy>> StallingProxy::Start(
    const std::string& target_path, const std::string& listen_path, bool plain) {
  auto state = std::make_shared<State>();
  state->target = target_path;
  state->plain = plain;
  state->listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un addr = Address(listen_path);
  ::unlink(listen_path.c_str());
  if (state->listener < 0 ||
      ::bind(state->listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
      ::listen(state->listener, 64) < 0 || ::pipe2(state->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
    return absl::InternalError(absl::StrCat("cannot listen on ", listen_path, ": ",
                                            std::strerror(errno)));
  }
  std::unique_ptr<StallingProxy> proxy(new StallingProxy(state));
  proxy->thread_ = std::thread([state] { state->Run(); });
  return proxy;
}

StallingProxy::~StallingProxy() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->stopping = true;
  }
  state_->Poke();
  thread_.join();
  ::close(state_->listener);
  ::close(state_->wake[0]);
  ::close(state_->wake[1]);
}

void StallingProxy::HoldEventConnections() {
  absl::MutexLock lock(&state_->mu);
  state_->hold_events = true;
}

void StallingProxy::Release() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->hold_events = false;
  }
  state_->Poke();
}

void StallingProxy::DropAll() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->drop = true;
  }
  state_->Poke();
  absl::MutexLock lock(&state_->mu);
  state_->mu.Await(absl::Condition(
      +[](State* st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(st->mu) { return !st->drop || st->stopping; },
      state_.get()));
}

void StallingProxy::Refuse(bool refuse) {
  absl::MutexLock lock(&state_->mu);
  state_->refuse = refuse;
}

int StallingProxy::held() const {
  absl::MutexLock lock(&state_->mu);
  return state_->held;
}

}  // namespace virtgate::testing
