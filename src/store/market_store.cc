#include "src/store/market_store.h"

namespace surplus::store {

absl::Status PgMarketStore::SetReservePrice(const std::string& model, Micros price, int64_t now_ms) {
  return pool_.Transact([&](pqxx::work& tx) {
    tx.exec_params(
        "INSERT INTO reserve_prices (gpu_model, price_micros, updated_ms) VALUES ($1, $2, $3)"
        " ON CONFLICT (gpu_model) DO UPDATE SET price_micros = EXCLUDED.price_micros,"
        " updated_ms = EXCLUDED.updated_ms",
        model, price, now_ms);
  });
}

absl::StatusOr<std::map<std::string, Micros>> PgMarketStore::ReservePrices() {
  std::map<std::string, Micros> out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    out.clear();
    for (const auto& r : tx.exec("SELECT gpu_model, price_micros FROM reserve_prices")) {
      out[r[0].as<std::string>()] = r[1].as<int64_t>();
    }
  });
  if (!st.ok()) return st;
  return out;
}

void InsertRoundPrices(pqxx::work& tx, const std::vector<RoundPrice>& prices) {
  for (const auto& p : prices) {
    tx.exec_params(
        "INSERT INTO market_rounds (at_ms, gpu_model, clearing_micros, reserve_micros,"
        " capacity_units, used_units, pending_jobs) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        p.at_ms, p.gpu_model, p.clearing, p.reserve, p.capacity_units, p.used_units, p.pending_jobs);
  }
}

absl::Status PgMarketStore::RecordRound(const std::vector<RoundPrice>& prices) {
  return pool_.Transact([&](pqxx::work& tx) { InsertRoundPrices(tx, prices); });
}

absl::StatusOr<std::map<std::string, RoundPrice>> PgMarketStore::LatestPrices() {
  std::map<std::string, RoundPrice> out;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    out.clear();
    // A few index probes per pool (market_rounds_model_id), not a pass over the history:
    // the models are walked as a loose index scan, then each one's latest row is read. The
    // range (not "=") keeps the planner off a backward scan of the primary key filtered by
    // model, which walks every later row of the other pools to reach a quiet pool's last
    // one (BENCHMARKS.md, "Latest price per pool").
    for (const auto& r : tx.exec(
             "WITH RECURSIVE models(m) AS ("
             " SELECT min(gpu_model) FROM market_rounds"
             " UNION ALL SELECT (SELECT min(gpu_model) FROM market_rounds WHERE gpu_model > m)"
             " FROM models WHERE m IS NOT NULL)"
             " SELECT r.gpu_model, r.clearing_micros, r.reserve_micros, r.capacity_units,"
             " r.used_units, r.pending_jobs, r.at_ms FROM models, LATERAL (SELECT * FROM market_rounds"
             " WHERE gpu_model >= models.m AND gpu_model <= models.m"
             " ORDER BY gpu_model DESC, id DESC LIMIT 1) r WHERE models.m IS NOT NULL")) {
      RoundPrice p;
      p.gpu_model = r[0].as<std::string>();
      p.clearing = r[1].as<int64_t>();
      p.reserve = r[2].as<int64_t>();
      p.capacity_units = r[3].as<int64_t>();
      p.used_units = r[4].as<int64_t>();
      p.pending_jobs = r[5].as<int>();
      p.at_ms = r[6].as<int64_t>();
      out[p.gpu_model] = p;
    }
  });
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<int64_t> PgMarketStore::PruneRounds(int64_t before_ms) {
  int64_t deleted = 0;
  absl::Status st = pool_.Transact([&](pqxx::work& tx) {
    deleted = static_cast<int64_t>(tx.exec_params("DELETE FROM market_rounds WHERE at_ms < $1", before_ms).affected_rows());
  });
  if (!st.ok()) return st;
  return deleted;
}

}  // namespace surplus::store
