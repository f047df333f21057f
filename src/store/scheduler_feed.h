#pragma once
// The scheduling leader's view of the store: one full read when it takes over, then only
// what changed since its previous read (rows stamped with change_xid, see migration 0002).
// Each read runs in one REPEATABLE READ transaction, so it is a consistent snapshot, and
// records that snapshot's xmin as the watermark for the next read: a transaction below it
// had ended before the read and its rows were in it; any other has an id at or above it.
// Rows may be read twice (a transaction in flight at one read is re-read at the next);
// callers apply them as upserts.

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/scheduler.h"
#include "src/store/node_store.h"
#include "src/store/pg_pool.h"

namespace surplus::store {

struct FeedRead {
  bool full = false;                       ///< everything (not only changes)
  std::vector<StoredNode> nodes;           ///< changed nodes, whole; not lost
  std::vector<std::string> gone_nodes;     ///< changed nodes that are lost
  std::vector<scheduler::JobView> jobs;    ///< changed jobs that are pending or running
  std::vector<std::string> ended_jobs;     ///< changed jobs that are no longer active
  std::map<std::string, Micros> reserve_prices;                ///< always complete
  std::map<std::string, scheduler::TenantQuota> quotas;       ///< always complete
};

class PgSchedulerFeed {
 public:
  explicit PgSchedulerFeed(PgPool& pool) : pool_(pool) {}

  /// Everything, and the feed continues from this read.
  absl::StatusOr<FeedRead> ReadAll() { return Read(true); }
  /// What changed since the previous successful read; everything when there was none.
  absl::StatusOr<FeedRead> ReadChanges() { return Read(watermark_.empty()); }
  /// Forget the watermark: the next ReadChanges() reads everything.
  void Reset() { watermark_.clear(); }

 private:
  absl::StatusOr<FeedRead> Read(bool full);

  PgPool& pool_;
  std::string watermark_;  ///< xid8 as text; empty = none
};

}  // namespace surplus::store
