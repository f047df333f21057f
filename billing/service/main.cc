// surplus-billing: receives usage records from workers and stores each exactly once,
// keyed by (worker id, sequence number). Rating and invoices read these records.

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "src/api/auth.h"
#include "src/api/executor.h"
#include "src/common/flags.h"
#include "src/common/grpc_util.h"
#include "src/common/logging.h"
#include "src/store/migrations.h"
#include "src/store/usage_store.h"
#include "surplus/v1/billing.grpc.pb.h"

namespace surplus::billing {
namespace v1 = surplus::v1;

// Validates a batch before anything is written.
absl::Status ValidateReport(const v1::ReportUsageRequest& req) {
  if (req.records_size() == 0) return absl::InvalidArgumentError("records: empty");
  if (req.records_size() > 5000) return absl::InvalidArgumentError("records: at most 5000 per call");
  for (int i = 0; i < req.records_size(); ++i) {
    const auto& r = req.records(i);
    const std::string f = absl::StrCat("records[", i, "]");
    if (r.worker_id().empty() || r.worker_id().size() > 253) return absl::InvalidArgumentError(f + ".worker_id: required");
    if (r.seq() == 0 || r.seq() > static_cast<uint64_t>(INT64_MAX)) {
      return absl::InvalidArgumentError(f + ".seq: must be 1 or more");
    }
    if (r.job_id().empty() || r.job_id().size() > 64) return absl::InvalidArgumentError(f + ".job_id: required");
    if (r.tenant_id().empty() || r.tenant_id().size() > 63) return absl::InvalidArgumentError(f + ".tenant_id: required");
    if (r.end_ms() < r.start_ms() || r.start_ms() <= 0) {
      return absl::InvalidArgumentError(f + ": end_ms must not precede start_ms");
    }
    if (r.gpu_ms() < 0) return absl::InvalidArgumentError(f + ".gpu_ms: must not be negative");
    // A job uses at most 64 GPUs per record's node: GPU-ms cannot exceed wall-ms x 64.
    if (r.gpu_ms() / 64 > r.end_ms() - r.start_ms()) {
      return absl::InvalidArgumentError(f + ".gpu_ms: larger than the interval allows");
    }
  }
  return absl::OkStatus();
}

class BillingServiceImpl final : public v1::BillingService::CallbackService {
 public:
  BillingServiceImpl(store::PgUsageStore& usage, api::Authenticator& auth, api::Executor& executor)
      : usage_(usage), auth_(auth), executor_(executor) {}

  grpc::ServerUnaryReactor* ReportUsage(grpc::CallbackServerContext* c, const v1::ReportUsageRequest* req,
                                        v1::ReportUsageResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
    executor_.Submit([this, c, req, resp, reactor] {
      auto p = auth_.Authorize(*c, {v1::ROLE_WORKER});
      if (!p.ok()) return reactor->Finish(ToGrpc(p.status()));
      if (absl::Status s = ValidateReport(*req); !s.ok()) return reactor->Finish(ToGrpc(s));
      std::vector<v1::UsageRecord> records(req->records().begin(), req->records().end());
      auto acked = usage_.Insert(records, NowMs());
      if (!acked.ok()) return reactor->Finish(ToGrpc(acked.status()));
      for (uint64_t s : *acked) resp->add_acked_seqs(s);
      reactor->Finish(grpc::Status::OK);
    });
    return reactor;
  }

 private:
  store::PgUsageStore& usage_;
  api::Authenticator& auth_;
  api::Executor& executor_;
};

}  // namespace surplus::billing

namespace {
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"surplus-billing: stores usage records exactly once"};
  std::string database_url = "postgresql://127.0.0.1:5432/surplus";
  std::string listen = "127.0.0.1:50052";
  std::string log_level = "info";
  bool log_json = false;
  int threads = 4;
  std::string tls_cert, tls_key;
  app.add_option("--database-url", database_url, "PostgreSQL connection string or URI");
  app.add_option("--tls-cert", tls_cert, "PEM certificate chain; with --tls-key serves TLS");
  app.add_option("--tls-key", tls_key, "PEM private key");
  app.add_option("--listen", listen, "gRPC address (host:port)");
  app.add_option("--threads", threads, "request worker threads")->check(CLI::Range(1, 256));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off");
  app.add_flag("--log-json", log_json, "log one JSON object per line");
  surplus::BindEnvironment(app);
  CLI11_PARSE(app, argc, argv);
  surplus::InitLogging("billing", log_level, log_json);
  auto creds = surplus::ServerCredentialsFromFiles(tls_cert, tls_key);
  if (!creds.ok()) {
    spdlog::error("{}", std::string(creds.status().message()));
    return 2;
  }

  surplus::store::PgPool pool(database_url, threads + 1);
  auto version = surplus::store::SchemaVersion(pool);
  if (!version.ok() || *version < surplus::store::EmbeddedMigrations().back().version) {
    spdlog::error("database not reachable or schema not migrated: run `surplus-control migrate` ({})",
                  version.ok() ? "old schema" : version.status().ToString());
    return 1;
  }
  surplus::store::PgAuthStore auth_store(pool);
  surplus::store::PgUsageStore usage(pool);
  surplus::api::Authenticator auth(auth_store, std::chrono::milliseconds(1000));
  surplus::api::Executor executor(threads);
  surplus::billing::BillingServiceImpl service(usage, auth, executor);

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, *creds, &port);
  builder.SetMaxReceiveMessageSize(surplus::kMaxMessageBytes);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  if (!server || port == 0) {
    spdlog::error("cannot listen on {}", listen);
    return 1;
  }
  spdlog::info("billing listening on {}", listen);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}
