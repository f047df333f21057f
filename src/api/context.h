#pragma once
// What the gRPC services share: configuration, stores, auth, executors and hubs.

#include <grpcpp/grpcpp.h>

#include <map>
#include <string>

#include "scheduler/scheduler.h"
#include "src/api/auth.h"
#include "src/api/executor.h"
#include "src/api/batchers.h"
#include "src/api/validation.h"
#include "src/common/grpc_util.h"
#include "src/store/auth_store.h"
#include "src/store/job_store.h"
#include "src/store/market_store.h"
#include "src/store/node_store.h"
#include "src/store/scheduler_feed.h"
#include "src/store/usage_store.h"

namespace surplus::api {

class WatchHub;
class WorkerHub;

struct ApiConfig {
  /// SIGTERM-to-SIGKILL notice for preemptions and cancels.
  int64_t preemption_notice_ms = 120'000;
  int64_t heartbeat_interval_ms = 1'000;
  /// A worker's stream is reconciled on every nudge and when its jobs change, else at most
  /// this often (resends what the worker may have missed).
  int64_t reconcile_interval_ms = 5'000;
  /// The scheduling leader deletes market price rows older than this (0: keeps them all).
  int64_t price_history_ms = 30LL * 24 * 3'600'000;
  store::HarvestConfig harvest;
  Limits limits;
  /// Market settings used by the scheduler and quotes (reserve prices come from the DB).
  scheduler::MarketConfig market;
};

struct ApiContext {
  ApiConfig config;
  store::PgPool* pool = nullptr;
  store::PgAuthStore* auth_store = nullptr;
  store::PgJobStore* jobs = nullptr;
  store::PgNodeStore* nodes = nullptr;
  store::PgMarketStore* market = nullptr;
  store::PgUsageStore* usage = nullptr;
  Authenticator* auth = nullptr;
  Executor* executor = nullptr;
  /// GetQuote's own bounded pool, so that quotes (which wait for one another and may load
  /// the whole fleet) never hold the threads that worker streams and submits run on.
  /// Null: quotes use `executor`.
  Executor* quote_executor = nullptr;
  SubmitBatcher* batcher = nullptr;
  TelemetryBatcher* telemetry = nullptr;
  WatchHub* watch = nullptr;
  WorkerHub* workers = nullptr;
};

/// Runs `fn` (returning absl::Status) on the executor and finishes the unary call with it.
template <typename Fn>
grpc::ServerUnaryReactor* Defer(grpc::CallbackServerContext* ctx, Executor& executor, Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  executor.Submit([reactor, fn = std::move(fn)]() mutable { reactor->Finish(ToGrpc(fn())); });
  return reactor;
}

/// Defer on a bounded executor: when its queue is full the call fails at once with
/// RESOURCE_EXHAUSTED and `busy` instead of waiting in line.
template <typename Fn>
grpc::ServerUnaryReactor* DeferOrRefuse(grpc::CallbackServerContext* ctx, Executor& executor,
                                        const char* busy, Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (!executor.TrySubmit([reactor, fn = std::move(fn)]() mutable { reactor->Finish(ToGrpc(fn())); })) {
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, busy));
  }
  return reactor;
}

}  // namespace surplus::api
