#pragma once
// For the benchmarks that drive a running control plane: a tenant of their own, and its key.

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "src/common/grpc_util.h"
#include "surplus/v1/operator.grpc.pb.h"

namespace surplus::bench {

/// Creates tenant `tenant` with the operator key and returns a new tenant key for it.
inline absl::StatusOr<std::string> NewTenantKey(const std::shared_ptr<grpc::Channel>& channel,
                                                const std::string& operator_key, const std::string& tenant) {
  auto op = surplus::v1::OperatorService::NewStub(channel);
  {
    surplus::v1::CreateTenantRequest req;
    req.set_id(tenant);
    surplus::v1::Tenant t;
    grpc::ClientContext ctx;
    AddBearer(&ctx, operator_key);
    grpc::Status s = op->CreateTenant(&ctx, req, &t);
    if (!s.ok()) return absl::UnavailableError(absl::StrCat("CreateTenant: ", s.error_message()));
  }
  surplus::v1::IssueApiKeyRequest req;
  req.set_role(surplus::v1::ROLE_TENANT);
  req.set_tenant_id(tenant);
  surplus::v1::IssueApiKeyResponse resp;
  grpc::ClientContext ctx;
  AddBearer(&ctx, operator_key);
  grpc::Status s = op->IssueApiKey(&ctx, req, &resp);
  if (!s.ok()) return absl::UnavailableError(absl::StrCat("IssueApiKey: ", s.error_message()));
  return resp.api_key();
}

}  // namespace surplus::bench
