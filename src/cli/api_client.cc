#include "src/cli/api_client.h"

#include <utility>

#include "src/common/grpc_util.h"

namespace surplus::cli {

std::unique_ptr<ApiClient> ApiClient::Connect(const ConnectionOptions& options) {
  return std::make_unique<ApiClient>(MakeChannel(options.endpoint, options.tls_ca_file),
                                     options.api_key, options.call_timeout);
}

ApiClient::ApiClient(std::shared_ptr<grpc::Channel> channel, std::string api_key,
                     std::chrono::milliseconds call_timeout)
    : channel_(std::move(channel)),
      api_key_(std::move(api_key)),
      call_timeout_(call_timeout),
      tenant_(v1::TenantService::NewStub(channel_)),
      operator_(v1::OperatorService::NewStub(channel_)),
      finance_(v1::FinanceService::NewStub(channel_)) {}

std::unique_ptr<grpc::ClientContext> ApiClient::NewContext(bool with_deadline) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!api_key_.empty()) AddBearer(ctx.get(), api_key_);
  if (with_deadline && call_timeout_.count() > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() + call_timeout_);
  }
  return ctx;
}

template <typename Stub, typename Req, typename Resp>
absl::StatusOr<Resp> ApiClient::Unary(
    Stub& stub, grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
    const Req& req) const {
  auto ctx = NewContext();
  Resp resp;
  grpc::Status status = (stub.*method)(ctx.get(), req, &resp);
  if (!status.ok()) return FromGrpc(status);
  return resp;
}

absl::StatusOr<v1::SubmitJobResponse> ApiClient::SubmitJob(const v1::SubmitJobRequest& req) const {
  return Unary(*tenant_, &v1::TenantService::Stub::SubmitJob, req);
}
absl::StatusOr<v1::Job> ApiClient::GetJob(const v1::GetJobRequest& req) const {
  return Unary(*tenant_, &v1::TenantService::Stub::GetJob, req);
}
absl::StatusOr<v1::ListJobsResponse> ApiClient::ListJobs(const v1::ListJobsRequest& req) const {
  return Unary(*tenant_, &v1::TenantService::Stub::ListJobs, req);
}
absl::StatusOr<v1::Job> ApiClient::CancelJob(const v1::CancelJobRequest& req) const {
  return Unary(*tenant_, &v1::TenantService::Stub::CancelJob, req);
}
absl::StatusOr<v1::GetQuoteResponse> ApiClient::GetQuote(const v1::GetQuoteRequest& req) const {
  return Unary(*tenant_, &v1::TenantService::Stub::GetQuote, req);
}
absl::StatusOr<v1::GetJobLogResponse> ApiClient::GetJobLog(const v1::GetJobLogRequest& req) const {
  return Unary(*tenant_, &v1::TenantService::Stub::GetJobLog, req);
}

absl::Status ApiClient::WatchJob(const v1::WatchJobRequest& req,
                                 const std::function<bool(const v1::JobEvent&)>& on_event) const {
  auto ctx = NewContext(/*with_deadline=*/false);
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = tenant_->WatchJob(ctx.get(), req);
  v1::JobEvent event;
  bool stopped = false;
  while (reader->Read(&event)) {
    if (!on_event(event)) {
      stopped = true;
      ctx->TryCancel();
      break;
    }
  }
  grpc::Status status = reader->Finish();
  if (stopped) return absl::OkStatus();
  return FromGrpc(status);
}

absl::StatusOr<v1::ListNodesResponse> ApiClient::ListNodes(const v1::ListNodesRequest& req) const {
  return Unary(*operator_, &v1::OperatorService::Stub::ListNodes, req);
}
absl::StatusOr<v1::GetCapacityResponse> ApiClient::GetCapacity(
    const v1::GetCapacityRequest& req) const {
  return Unary(*operator_, &v1::OperatorService::Stub::GetCapacity, req);
}
absl::StatusOr<v1::Tenant> ApiClient::CreateTenant(const v1::CreateTenantRequest& req) const {
  return Unary(*operator_, &v1::OperatorService::Stub::CreateTenant, req);
}
absl::StatusOr<v1::ListTenantsResponse> ApiClient::ListTenants(
    const v1::ListTenantsRequest& req) const {
  return Unary(*operator_, &v1::OperatorService::Stub::ListTenants, req);
}
absl::StatusOr<v1::IssueApiKeyResponse> ApiClient::IssueApiKey(
    const v1::IssueApiKeyRequest& req) const {
  return Unary(*operator_, &v1::OperatorService::Stub::IssueApiKey, req);
}
absl::StatusOr<v1::RevokeApiKeyResponse> ApiClient::RevokeApiKey(
    const v1::RevokeApiKeyRequest& req) const {
  return Unary(*operator_, &v1::OperatorService::Stub::RevokeApiKey, req);
}
absl::StatusOr<v1::SetReservePriceResponse> ApiClient::SetReservePrice(
    const v1::SetReservePriceRequest& req) const {
  return Unary(*operator_, &v1::OperatorService::Stub::SetReservePrice, req);
}
absl::StatusOr<v1::Node> ApiClient::CordonNode(const v1::CordonNodeRequest& req) const {
  return Unary(*operator_, &v1::OperatorService::Stub::CordonNode, req);
}
absl::StatusOr<v1::ReclaimCapacityResponse> ApiClient::ReclaimCapacity(
    const v1::ReclaimCapacityRequest& req) const {
  return Unary(*operator_, &v1::OperatorService::Stub::ReclaimCapacity, req);
}

absl::StatusOr<v1::GetUsageResponse> ApiClient::GetUsage(const v1::GetUsageRequest& req) const {
  return Unary(*finance_, &v1::FinanceService::Stub::GetUsage, req);
}
absl::StatusOr<v1::Invoice> ApiClient::GetInvoice(const v1::GetInvoiceRequest& req) const {
  return Unary(*finance_, &v1::FinanceService::Stub::GetInvoice, req);
}
absl::StatusOr<v1::ListInvoicesResponse> ApiClient::ListInvoices(
    const v1::ListInvoicesRequest& req) const {
  return Unary(*finance_, &v1::FinanceService::Stub::ListInvoices, req);
}
absl::StatusOr<v1::Invoice> ApiClient::FinalizeInvoice(const v1::FinalizeInvoiceRequest& req) const {
  return Unary(*finance_, &v1::FinanceService::Stub::FinalizeInvoice, req);
}

}  // namespace surplus::cli
