#include "src/store/scheduler_feed.h"

#include "src/store/job_store.h"

namespace surplus::store {

absl::StatusOr<FeedRead> PgSchedulerFeed::Read(bool full) {
  FeedRead out;
  std::string next_watermark;
  absl::Status st = pool_.WithConnection([&](pqxx::connection& conn) {
    out = FeedRead{};
    out.full = full;
    pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(conn);
    // The first statement fixes the transaction's snapshot; its xmin is the next watermark.
    next_watermark = tx.exec("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")[0][0].as<std::string>();
    const std::string since = full ? std::string() : watermark_;
    if (!full) {
      // An incremental read returns few rows through the change_xid indexes. Without
      // statistics (a young or fast-growing table not yet analyzed) the planner guesses a
      // third of the table and scans all of it, tens of milliseconds per round at 100,000
      // jobs; this transaction never wants that.
      tx.exec("SET LOCAL enable_seqscan = off");
    }
    out.nodes = PgNodeStore::ReadSchedulerNodes(tx, since, &out.gone_nodes);
    out.jobs = PgJobStore::ReadSchedulerJobs(tx, since, &out.ended_jobs);
    for (const auto& r : tx.exec("SELECT gpu_model, price_micros FROM reserve_prices")) {
      out.reserve_prices[r[0].as<std::string>()] = r[1].as<int64_t>();
    }
    for (const auto& r :
         tx.exec("SELECT id, max_gpus, max_pending_jobs FROM tenants WHERE max_gpus > 0 OR max_pending_jobs > 0")) {
      out.quotas[r[0].as<std::string>()] = scheduler::TenantQuota{r[1].as<int>(), r[2].as<int>()};
    }
    tx.commit();
  });
  if (!st.ok()) {
    watermark_.clear();  // the next read starts over
    return st;
  }
  watermark_ = std::move(next_watermark);
  return out;
}

}  // namespace surplus::store
