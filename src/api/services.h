#pragma once
// The gRPC services of surplus-control: thin adapters over the stores and the pure
// logic. Blocking work runs on the executor, never in a reactor.

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "scheduler/quote.h"
#include "src/api/context.h"
#include "src/api/fleet_mirror.h"
#include "surplus/v1/finance.grpc.pb.h"
#include "surplus/v1/operator.grpc.pb.h"
#include "surplus/v1/tenant.grpc.pb.h"
#include "surplus/v1/worker.grpc.pb.h"

namespace surplus::api {

class TenantServiceImpl final : public surplus::v1::TenantService::CallbackService {
 public:
  explicit TenantServiceImpl(ApiContext& ctx) : ctx_(ctx) {}
  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* c, const surplus::v1::SubmitJobRequest* req,
                                      surplus::v1::SubmitJobResponse* resp) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* c, const surplus::v1::GetJobRequest* req,
                                   surplus::v1::Job* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* c, const surplus::v1::ListJobsRequest* req,
                                     surplus::v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* c, const surplus::v1::CancelJobRequest* req,
                                      surplus::v1::Job* resp) override;
  grpc::ServerWriteReactor<surplus::v1::JobEvent>* WatchJob(grpc::CallbackServerContext* c,
                                                            const surplus::v1::WatchJobRequest* req) override;
  grpc::ServerUnaryReactor* GetQuote(grpc::CallbackServerContext* c, const surplus::v1::GetQuoteRequest* req,
                                     surplus::v1::GetQuoteResponse* resp) override;
  grpc::ServerUnaryReactor* GetJobLog(grpc::CallbackServerContext* c, const surplus::v1::GetJobLogRequest* req,
                                      surplus::v1::GetJobLogResponse* resp) override;

 private:
  ApiContext& ctx_;
  // Quotes run one at a time on this replica's own FleetMirror, brought up to date from the
  // change feed when it is older than a quote may be: each quote is a dry round on it.
  std::timed_mutex quote_mu_;
  std::unique_ptr<FleetMirror> quote_mirror_;  // guarded by quote_mu_, as are the two below
  int64_t quote_synced_ms_ = 0;                // when it was last brought up to date
  scheduler::QuoteBaseline quote_baseline_;    // BaselineOf() then
};

class OperatorServiceImpl final : public surplus::v1::OperatorService::CallbackService {
 public:
  explicit OperatorServiceImpl(ApiContext& ctx) : ctx_(ctx) {}
  grpc::ServerUnaryReactor* ListNodes(grpc::CallbackServerContext* c, const surplus::v1::ListNodesRequest* req,
                                      surplus::v1::ListNodesResponse* resp) override;
  grpc::ServerUnaryReactor* GetCapacity(grpc::CallbackServerContext* c, const surplus::v1::GetCapacityRequest* req,
                                        surplus::v1::GetCapacityResponse* resp) override;
  grpc::ServerUnaryReactor* CreateTenant(grpc::CallbackServerContext* c,
                                         const surplus::v1::CreateTenantRequest* req,
                                         surplus::v1::Tenant* resp) override;
  grpc::ServerUnaryReactor* ListTenants(grpc::CallbackServerContext* c, const surplus::v1::ListTenantsRequest* req,
                                        surplus::v1::ListTenantsResponse* resp) override;
  grpc::ServerUnaryReactor* IssueApiKey(grpc::CallbackServerContext* c, const surplus::v1::IssueApiKeyRequest* req,
                                        surplus::v1::IssueApiKeyResponse* resp) override;
  grpc::ServerUnaryReactor* RevokeApiKey(grpc::CallbackServerContext* c,
                                         const surplus::v1::RevokeApiKeyRequest* req,
                                         surplus::v1::RevokeApiKeyResponse* resp) override;
  grpc::ServerUnaryReactor* SetReservePrice(grpc::CallbackServerContext* c,
                                            const surplus::v1::SetReservePriceRequest* req,
                                            surplus::v1::SetReservePriceResponse* resp) override;
  grpc::ServerUnaryReactor* CordonNode(grpc::CallbackServerContext* c, const surplus::v1::CordonNodeRequest* req,
                                       surplus::v1::Node* resp) override;
  grpc::ServerUnaryReactor* ReclaimCapacity(grpc::CallbackServerContext* c,
                                            const surplus::v1::ReclaimCapacityRequest* req,
                                            surplus::v1::ReclaimCapacityResponse* resp) override;

 private:
  ApiContext& ctx_;
};

class FinanceServiceImpl final : public surplus::v1::FinanceService::CallbackService {
 public:
  explicit FinanceServiceImpl(ApiContext& ctx) : ctx_(ctx) {}
  grpc::ServerUnaryReactor* GetUsage(grpc::CallbackServerContext* c, const surplus::v1::GetUsageRequest* req,
                                     surplus::v1::GetUsageResponse* resp) override;
  grpc::ServerUnaryReactor* GetInvoice(grpc::CallbackServerContext* c, const surplus::v1::GetInvoiceRequest* req,
                                       surplus::v1::Invoice* resp) override;
  grpc::ServerUnaryReactor* ListInvoices(grpc::CallbackServerContext* c,
                                         const surplus::v1::ListInvoicesRequest* req,
                                         surplus::v1::ListInvoicesResponse* resp) override;
  grpc::ServerUnaryReactor* FinalizeInvoice(grpc::CallbackServerContext* c,
                                            const surplus::v1::FinalizeInvoiceRequest* req,
                                            surplus::v1::Invoice* resp) override;

 private:
  ApiContext& ctx_;
};

class WorkerServiceImpl final : public surplus::v1::WorkerService::CallbackService {
 public:
  explicit WorkerServiceImpl(ApiContext& ctx) : ctx_(ctx) {}
  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* c, const surplus::v1::RegisterRequest* req,
                                     surplus::v1::RegisterResponse* resp) override;
  grpc::ServerBidiReactor<surplus::v1::WorkerMessage, surplus::v1::ControlMessage>* Connect(
      grpc::CallbackServerContext* c) override;

 private:
  ApiContext& ctx_;
};

/// Pushes job state changes to WatchJob streams. Polls the database (so changes made by
/// any replica are seen) every `interval`.
class WatchHub {
 public:
  class Watcher {
   public:
    virtual ~Watcher() = default;
    virtual void OnChange(const surplus::v1::Job& job) = 0;
  };
  WatchHub(ApiContext& ctx, std::chrono::milliseconds interval);
  ~WatchHub();
  void Add(const std::string& job_id, Watcher* w, const store::JobVersion& seen);
  void Remove(Watcher* w);

 private:
  void Loop();
  ApiContext& ctx_;
  const std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  struct Entry {
    std::string job_id;
    store::JobVersion seen;
  };
  std::map<Watcher*, Entry> watchers_;
  bool stopping_ = false;
  std::thread thread_;
};

/// Connected workers of this replica, so the scheduling loop can nudge them.
class WorkerHub {
 public:
  class Conn {
   public:
    virtual ~Conn() = default;
    virtual void Nudge() = 0;
  };
  void Add(const std::string& node, Conn* c);
  void Remove(const std::string& node, Conn* c);
  /// The desired jobs of these nodes changed: reconciles the workers connected here and
  /// tells the other replicas (through the publisher) to do the same with theirs.
  void Nudge(const std::string& node);
  void Nudge(const std::vector<std::string>& nodes);
  /// Reconciles the workers of these nodes connected here only (nudges from elsewhere).
  void NudgeHere(const std::vector<std::string>& nodes);
  void NudgeAll();
  /// Set before serving; called outside the hub's lock.
  void SetPublisher(std::function<void(const std::vector<std::string>&)> publish) { publish_ = std::move(publish); }

 private:
  std::mutex mu_;
  std::multimap<std::string, Conn*> conns_;
  std::function<void(const std::vector<std::string>&)> publish_;
};

}  // namespace surplus::api
