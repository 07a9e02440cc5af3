// WithoutReflection: a ServerBuilder option that leaves gRPC's reflection
// service out of one server. grpc::reflection::
// InitProtoReflectionServerBuilderPlugin() registers the plugin for every
// server the process builds after it, so a server that must not offer
// reflection (--reflection=false, the health-only --health_listen server)
// removes it here.
#pragma once

#include <grpcpp/impl/server_builder_option.h>

#include <memory>
#include <vector>

namespace virtgate {

class WithoutReflection : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments* args) override;
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override;
};

}  // namespace virtgate
