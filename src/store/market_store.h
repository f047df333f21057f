#pragma once
// Reserve prices and the clearing price of each round.

#include <map>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/status/statusor.h"
#include "scheduler/scheduler.h"
#include "src/store/pg_pool.h"

namespace surplus::store {

/// One row of market_rounds: a pool's figures as of a scheduling round. A pool's latest row
/// (highest id) holds its current clearing price (outbid reasons quote it when read).
struct RoundPrice {
  std::string gpu_model;
  Micros clearing = 0;
  Micros reserve = 0;
  int64_t capacity_units = 0;
  int64_t used_units = 0;
  int pending_jobs = 0;
  int64_t at_ms = 0;
};

/// Appends `prices` to market_rounds in `tx`.
void InsertRoundPrices(pqxx::work& tx, const std::vector<RoundPrice>& prices);

class PgMarketStore {
 public:
  explicit PgMarketStore(PgPool& pool) : pool_(pool) {}

  absl::Status SetReservePrice(const std::string& model, Micros price, int64_t now_ms);
  absl::StatusOr<std::map<std::string, Micros>> ReservePrices();
  /// Records one round (one row per pool). The scheduling leader writes its rows with the
  /// round's decisions instead (PgJobStore::ApplyDecisions).
  absl::Status RecordRound(const std::vector<RoundPrice>& prices);
  /// The latest round's prices, per model.
  absl::StatusOr<std::map<std::string, RoundPrice>> LatestPrices();
  /// Deletes price rows older than `before_ms`; returns how many.
  absl::StatusOr<int64_t> PruneRounds(int64_t before_ms);

 private:
  PgPool& pool_;
};

}  // namespace surplus::store
