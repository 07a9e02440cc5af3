#include "server/rpc/grpc_status.h"

#include <string>

#include "server/base/quote.h"

namespace virtgate {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share the canonical numbering.
  // Bounded and on one line whatever it quotes (libvirt's messages echo
  // names): see quote.h.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), BoundMessage(status.message()));
}

}  // namespace virtgate
