#include "server/rpc/without_reflection.h"

#include <algorithm>

namespace virtgate {

void WithoutReflection::UpdateArguments(grpc::ChannelArguments* /*args*/) {}

void WithoutReflection::UpdatePlugins(
    std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) {
  plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                                  return p->name() == "proto_server_reflection";
                                }),
                 plugins->end());
}

}  // namespace virtgate
