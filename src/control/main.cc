// surplus-control: the control plane. `serve` (default) runs the gRPC API, the HTTP
// endpoints and, on the elected replica, the scheduling loop; `migrate` applies the schema.

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <csignal>
#include <fstream>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "src/api/services.h"
#include "src/common/crypto.h"
#include "src/common/flags.h"
#include "src/common/logging.h"
#include "src/control/http.h"
#include "src/control/scheduling_loop.h"
#include "src/store/migrations.h"
#include "src/store/nudges.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

// Writes the key to `path`, readable only by its owner (0600), atomically.
bool WriteKeyFile(const std::string& path, const std::string& secret) {
  const std::string tmp = path + ".tmp";
  const mode_t old = umask(077);
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << secret << "\n";
    if (!out) {
      umask(old);
      return false;
    }
  }
  umask(old);
  chmod(tmp.c_str(), 0600);
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"surplus-control: the Surplus control plane"};
  std::string database_url = "postgresql://127.0.0.1:5432/surplus";
  std::string listen = "127.0.0.1:50051";
  std::string http_listen = "127.0.0.1:8080";
  std::string operator_key_file = "surplus-operator.key";
  std::string log_level = "info";
  bool log_json = false;
  int64_t round_ms = 1000;
  int64_t notice_ms = 120'000;
  int64_t lost_after_ms = 10'000;
  int64_t reconcile_interval_ms = 5'000;
  int64_t price_history_days = 30;
  int64_t owner_idle_window_ms = 300'000;
  // Outbids must pay, so prices and jobs do not thrash: a cent per GPU-hour above the bid,
  // after a minute of running.
  int64_t min_preempt_gap = 10'000;
  int64_t min_runtime_before_preempt_ms = 60'000;
  int threads = 8;
  int db_connections = 8;
  int submit_writers = 2;
  std::vector<std::string> list_prices = {"H100-80GB=4.00", "H200-141GB=5.00", "A100-80GB=2.50"};
  bool auto_migrate = false;
  std::string tls_cert, tls_key;

  app.add_option("--database-url", database_url, "PostgreSQL connection string or URI");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off");
  app.add_flag("--log-json", log_json, "log one JSON object per line");
  app.require_subcommand(0, 1);
  app.fallthrough();
  CLI::App* serve = app.add_subcommand("serve", "serve the API and run the scheduler (default)");
  CLI::App* migrate = app.add_subcommand("migrate", "apply database migrations and exit");
  for (CLI::App* sub : {&app, serve}) {
    // Options of `serve` are accepted before or after the subcommand.
    sub->add_option("--listen", listen, "gRPC address (host:port)");
    sub->add_option("--http-listen", http_listen, "HTTP address for /healthz, /metrics and the dashboard");
    sub->add_option("--operator-key-file", operator_key_file,
                    "where the first start writes the bootstrap operator key (mode 0600)");
    sub->add_option("--round-ms", round_ms, "scheduling round interval")->check(CLI::Range(50, 600'000));
    sub->add_option("--preemption-notice-ms", notice_ms, "SIGTERM-to-SIGKILL notice")->check(CLI::Range(0, 3'600'000));
    sub->add_option("--lost-after-ms", lost_after_ms, "a node silent this long is lost")->check(CLI::Range(1000, 3'600'000));
    sub->add_option("--reconcile-interval-ms", reconcile_interval_ms,
                    "resend desired jobs to a worker at most this often without a change")
        ->check(CLI::Range(200, 3'600'000));
    sub->add_option("--price-history-days", price_history_days,
                    "keep market price rows this many days (0: keep them all)")
        ->check(CLI::Range(0, 36'500));
    sub->add_option("--owner-idle-window-ms", owner_idle_window_ms,
                    "offer a GPU only after the owner left it idle this long (default 5 min)")->check(CLI::Range(0, 86'400'000));
    sub->add_option("--min-preempt-gap-micros", min_preempt_gap,
                    "preempt a spot job only when the price exceeds its bid by this much (default $0.01/GPU-h)")->check(CLI::Range(0, 1'000'000'000));
    sub->add_option("--min-runtime-before-preempt-ms", min_runtime_before_preempt_ms,
                    "a spot job runs at least this long before it can be outbid (default 1 min)")->check(CLI::Range(0, 86'400'000));
    sub->add_option("--list-price", list_prices, "on-demand list price per model, MODEL=DOLLARS (repeatable)");
    sub->add_option("--threads", threads, "request worker threads")->check(CLI::Range(1, 256));
    sub->add_option("--db-connections", db_connections, "PostgreSQL connections")->check(CLI::Range(2, 256));
    sub->add_option("--submit-writers", submit_writers, "concurrent submit batch writers")->check(CLI::Range(1, 32));
    sub->add_flag("--auto-migrate", auto_migrate, "apply migrations before serving");
    sub->add_option("--tls-cert", tls_cert, "PEM certificate chain; with --tls-key serves TLS");
    sub->add_option("--tls-key", tls_key, "PEM private key");
  }
  surplus::BindEnvironment(app);
  CLI11_PARSE(app, argc, argv);
  surplus::InitLogging("control", log_level, log_json);
  auto creds = surplus::ServerCredentialsFromFiles(tls_cert, tls_key);
  if (!creds.ok()) {
    spdlog::error("{}", std::string(creds.status().message()));
    return 2;
  }

  surplus::store::PgPool pool(database_url, db_connections);
  if (migrate->parsed() || auto_migrate) {
    auto n = surplus::store::Migrate(pool);
    if (!n.ok()) {
      spdlog::error("migration failed: {}", n.status().ToString());
      return 1;
    }
    spdlog::info("schema up to date ({} migration(s) applied)", *n);
    if (migrate->parsed()) return 0;
  }
  auto version = surplus::store::SchemaVersion(pool);
  if (!version.ok()) {
    spdlog::error("cannot reach the database: {}", version.status().ToString());
    return 1;
  }
  const int latest = surplus::store::EmbeddedMigrations().back().version;
  if (*version < latest) {
    spdlog::error("database schema is at version {}, this binary needs {}: run `surplus-control migrate`",
                  *version, latest);
    return 1;
  }

  surplus::api::ApiContext ctx;
  ctx.config.preemption_notice_ms = notice_ms;
  ctx.config.harvest.lost_after_ms = lost_after_ms;
  ctx.config.reconcile_interval_ms = reconcile_interval_ms;
  ctx.config.price_history_ms = price_history_days * 24 * 3'600'000;
  ctx.config.harvest.owner_idle_window_ms = owner_idle_window_ms;
  ctx.config.market.min_preempt_gap = min_preempt_gap;
  ctx.config.market.min_runtime_before_preempt_ms = min_runtime_before_preempt_ms;
  ctx.config.market.preempt_notice_ms = notice_ms;
  for (const auto& lp : list_prices) {
    std::vector<std::string> kv = absl::StrSplit(lp, absl::MaxSplits('=', 1));
    const surplus::GpuModel* model = kv.size() == 2 ? surplus::FindGpuModel(kv[0]) : nullptr;
    auto price = kv.size() == 2 ? surplus::ParseUsd(kv[1], 1000 * surplus::kMicrosPerDollar)
                                : absl::StatusOr<surplus::Micros>(absl::InvalidArgumentError("missing '='"));
    if (model == nullptr || !price.ok()) {
      spdlog::error("--list-price {}: expected MODEL=DOLLARS with a known model", lp);
      return 2;
    }
    ctx.config.market.list_price[model->name] = *price;
  }
  surplus::store::PgAuthStore auth_store(pool);
  surplus::store::PgJobStore jobs(pool);
  surplus::store::PgNodeStore nodes(pool);
  surplus::store::PgMarketStore market(pool);
  surplus::store::PgUsageStore usage(pool);
  surplus::api::Authenticator auth(auth_store, std::chrono::milliseconds(1000));
  // The batchers outlive the executor, whose tasks may still be queueing work at exit.
  surplus::api::SubmitBatcher batcher(jobs, submit_writers, 512);
  surplus::api::TelemetryBatcher telemetry(nodes, 1024);
  surplus::api::Executor executor(threads);
  // Quotes run one at a time (one mirror per replica): two threads, and a short line.
  surplus::api::Executor quote_executor(2, /*max_queued=*/32);
  surplus::api::WorkerHub workers;
  // Nudges reach the workers connected to the other replicas through the database.
  const std::string replica_id = surplus::RandomHex(8);
  workers.SetPublisher([&pool, &replica_id](const std::vector<std::string>& names) {
    if (absl::Status s = surplus::store::PublishNudges(pool, replica_id, names); !s.ok()) {
      spdlog::debug("could not publish nudges: {}", s.ToString());
    }
  });
  surplus::store::NudgeListener nudges(
      database_url, replica_id, [&workers](const std::vector<std::string>& names) { workers.NudgeHere(names); },
      [&workers] { workers.NudgeAll(); });
  ctx.pool = &pool;
  ctx.auth_store = &auth_store;
  ctx.jobs = &jobs;
  ctx.nodes = &nodes;
  ctx.market = &market;
  ctx.usage = &usage;
  ctx.auth = &auth;
  ctx.executor = &executor;
  ctx.quote_executor = &quote_executor;
  ctx.batcher = &batcher;
  ctx.telemetry = &telemetry;
  ctx.workers = &workers;
  surplus::api::WatchHub watch(ctx, std::chrono::milliseconds(200));
  ctx.watch = &watch;

  auto key = auth_store.BootstrapOperatorKey(surplus::NowMs());
  if (!key.ok()) {
    spdlog::error("cannot create the operator key: {}", key.status().ToString());
    return 1;
  }
  if (!key->key_id.empty()) {
    if (!WriteKeyFile(operator_key_file, key->secret)) {
      spdlog::error("cannot write the operator key to {}", operator_key_file);
      return 1;
    }
    spdlog::info("created operator key {} and wrote it to {} (mode 0600)", key->key_id, operator_key_file);
  }

  surplus::api::TenantServiceImpl tenant_svc(ctx);
  surplus::api::OperatorServiceImpl operator_svc(ctx);
  surplus::api::FinanceServiceImpl finance_svc(ctx);
  surplus::api::WorkerServiceImpl worker_svc(ctx);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, *creds, &port);
  builder.SetMaxReceiveMessageSize(surplus::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(surplus::kMaxMessageBytes);
  builder.RegisterService(&tenant_svc);
  builder.RegisterService(&operator_svc);
  builder.RegisterService(&finance_svc);
  builder.RegisterService(&worker_svc);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    spdlog::error("cannot listen on {}", listen);
    return 1;
  }
  spdlog::info("gRPC API listening on {}", listen);

  surplus::control::SchedulingLoop loop(ctx, database_url, std::chrono::milliseconds(round_ms));
  loop.Start();
  surplus::control::HttpServer http(ctx, loop.stats());
  if (!http.Start(http_listen)) {
    spdlog::error("cannot listen on {} (HTTP)", http_listen);
    return 1;
  }
  spdlog::info("HTTP (dashboard, /metrics, /healthz) on http://{}", http_listen);

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  spdlog::info("shutting down");
  http.Stop();
  loop.Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}
