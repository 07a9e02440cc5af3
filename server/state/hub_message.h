// HubMessage: one WatchLifecycle response as the EventHub hands it out: the
// immutable message, shared by the history and every watcher's queue, with
// its wire form, serialized once when the HubMessage is made.
//
// Why the bytes travel with the message: filters, resume and coalescing read
// the fields, but a watch only writes the bytes. Written as a proto, the same
// event was serialized once per stream (a thousand times for a thousand
// watchers); written as wire(), every stream shares one refcounted slice.
//
// A handle as cheap to copy as a shared_ptr, and used like one: `->` and `*`
// reach the message; default-made (or nullptr) is empty. Immutable, so any
// thread may read it.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include <cstddef>
#include <memory>

#include "virtgate/v1/hypervisor.pb.h"

namespace virtgate {

class HubMessage {
 public:
  HubMessage() = default;
  HubMessage(std::nullptr_t) {}  // NOLINT(runtime/explicit): empty, as a null shared_ptr
  // Serializes `message` (the one serialization all its streams share).
  explicit HubMessage(v1::WatchLifecycleResponse message);

  const v1::WatchLifecycleResponse& operator*() const { return shared_->message; }
  const v1::WatchLifecycleResponse* operator->() const { return &shared_->message; }
  explicit operator bool() const { return shared_ != nullptr; }
  void reset() { shared_.reset(); }

  // The serialized message, for ServerWriteReactor<ByteBuffer>::StartWrite
  // (valid while this handle is held). gRPC's copy of it for a write only
  // takes a reference to the bytes; concurrent copies are safe.
  const grpc::ByteBuffer& wire() const { return shared_->wire; }

 private:
  struct Shared {
    v1::WatchLifecycleResponse message;
    grpc::ByteBuffer wire;
  };
  std::shared_ptr<const Shared> shared_;
};

}  // namespace virtgate
