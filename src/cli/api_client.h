#pragma once
// A thin typed client for the Surplus gRPC API: one channel, the three user-facing
// services, the caller's API key and a deadline on every unary call. Used by the
// `surplus` CLI and by benchmarks that drive a running control plane.

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "surplus/v1/finance.grpc.pb.h"
#include "surplus/v1/operator.grpc.pb.h"
#include "surplus/v1/tenant.grpc.pb.h"

namespace surplus::cli {

/// Where and as whom to connect.
struct ConnectionOptions {
  std::string endpoint = "127.0.0.1:50051";  ///< "host:port"
  std::string api_key;                       ///< sent as `authorization: Bearer <key>`
  std::string tls_ca_file;                   ///< empty = plaintext
  /// Deadline of each unary call. Streams (WatchJob) have none.
  std::chrono::milliseconds call_timeout{10'000};
};

/// Typed wrapper around the TenantService, OperatorService and FinanceService stubs.
/// Every unary method returns the response or the call's status with its gRPC code
/// carried over unchanged (absl and gRPC share canonical codes). Thread-safe: the
/// stubs are, and the object holds no other mutable state.
class ApiClient {
 public:
  /// Connects to `options.endpoint` (lazily: the first call dials).
  static std::unique_ptr<ApiClient> Connect(const ConnectionOptions& options);

  /// Uses an existing channel, e.g. an in-process one in tests.
  ApiClient(std::shared_ptr<grpc::Channel> channel, std::string api_key,
            std::chrono::milliseconds call_timeout);

  // TenantService.
  absl::StatusOr<v1::SubmitJobResponse> SubmitJob(const v1::SubmitJobRequest& req) const;
  absl::StatusOr<v1::Job> GetJob(const v1::GetJobRequest& req) const;
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& req) const;
  absl::StatusOr<v1::Job> CancelJob(const v1::CancelJobRequest& req) const;
  absl::StatusOr<v1::GetQuoteResponse> GetQuote(const v1::GetQuoteRequest& req) const;
  absl::StatusOr<v1::GetJobLogResponse> GetJobLog(const v1::GetJobLogRequest& req) const;
  /// Streams events to `on_event` until the server ends the stream (the job ended) or
  /// `on_event` returns false (the call is then cancelled and OK is returned).
  absl::Status WatchJob(const v1::WatchJobRequest& req,
                        const std::function<bool(const v1::JobEvent&)>& on_event) const;

  // OperatorService.
  absl::StatusOr<v1::ListNodesResponse> ListNodes(const v1::ListNodesRequest& req) const;
  absl::StatusOr<v1::GetCapacityResponse> GetCapacity(const v1::GetCapacityRequest& req) const;
  absl::StatusOr<v1::Tenant> CreateTenant(const v1::CreateTenantRequest& req) const;
  absl::StatusOr<v1::ListTenantsResponse> ListTenants(const v1::ListTenantsRequest& req) const;
  absl::StatusOr<v1::IssueApiKeyResponse> IssueApiKey(const v1::IssueApiKeyRequest& req) const;
  absl::StatusOr<v1::RevokeApiKeyResponse> RevokeApiKey(const v1::RevokeApiKeyRequest& req) const;
  absl::StatusOr<v1::SetReservePriceResponse> SetReservePrice(
      const v1::SetReservePriceRequest& req) const;
  absl::StatusOr<v1::Node> CordonNode(const v1::CordonNodeRequest& req) const;
  absl::StatusOr<v1::ReclaimCapacityResponse> ReclaimCapacity(
      const v1::ReclaimCapacityRequest& req) const;

  // FinanceService.
  absl::StatusOr<v1::GetUsageResponse> GetUsage(const v1::GetUsageRequest& req) const;
  absl::StatusOr<v1::Invoice> GetInvoice(const v1::GetInvoiceRequest& req) const;
  absl::StatusOr<v1::ListInvoicesResponse> ListInvoices(const v1::ListInvoicesRequest& req) const;
  absl::StatusOr<v1::Invoice> FinalizeInvoice(const v1::FinalizeInvoiceRequest& req) const;

  /// A context carrying the key and, when `with_deadline`, the unary call deadline;
  /// for callers that use the stubs directly.
  std::unique_ptr<grpc::ClientContext> NewContext(bool with_deadline = true) const;

  v1::TenantService::Stub& tenant() const { return *tenant_; }
  v1::OperatorService::Stub& operator_service() const { return *operator_; }
  v1::FinanceService::Stub& finance() const { return *finance_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  template <typename Stub, typename Req, typename Resp>
  absl::StatusOr<Resp> Unary(Stub& stub,
                             grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&,
                                                          Resp*),
                             const Req& req) const;

  std::shared_ptr<grpc::Channel> channel_;
  std::string api_key_;
  std::chrono::milliseconds call_timeout_;
  std::unique_ptr<v1::TenantService::Stub> tenant_;
  std::unique_ptr<v1::OperatorService::Stub> operator_;
  std::unique_ptr<v1::FinanceService::Stub> finance_;
};

}  // namespace surplus::cli
