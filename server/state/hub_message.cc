#include "server/state/hub_message.h"

#include <grpc/slice.h>
#include <grpcpp/support/slice.h>

#include <utility>

namespace virtgate {
namespace {

// Straight into a gRPC slice: no intermediate string to copy from.
grpc::ByteBuffer Serialize(const v1::WatchLifecycleResponse& message) {
  grpc_slice bytes = grpc_slice_malloc(message.ByteSizeLong());
  message.SerializeWithCachedSizesToArray(GRPC_SLICE_START_PTR(bytes));
  grpc::Slice slice(bytes, grpc::Slice::STEAL_REF);
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace

HubMessage::HubMessage(v1::WatchLifecycleResponse message) {
  grpc::ByteBuffer wire = Serialize(message);
  shared_ = std::make_shared<const Shared>(Shared{std::move(message), std::move(wire)});
}

}  // namespace virtgate
