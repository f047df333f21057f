#pragma once
// Jobs: submit (batched group commit), read, list, cancel, the scheduler's snapshot and
// decisions, and what workers report.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/scheduler.h"
#include "src/store/market_store.h"
#include "src/store/pg_pool.h"
#include "surplus/v1/common.pb.h"
#include "surplus/v1/worker.pb.h"

namespace surplus::store {

struct SubmitItem {
  std::string tenant_id;
  surplus::v1::JobSpec spec;  ///< validated
  int64_t now_ms = 0;
};

struct SubmitOutcome {
  absl::Status status;
  surplus::v1::Job job;
  bool created = false;
};

struct JobPage {
  std::vector<surplus::v1::Job> jobs;
  std::string next_page_token;
};

/// What a worker should be doing with one job of its node (level-triggered).
struct DesiredJob {
  surplus::v1::Assignment assignment;
  bool stop_requested = false;
  std::string stop_reason;
  int64_t stop_deadline_ms = 0;
  bool preemption = false;
};

/// Compact state used by watchers to notice changes.
struct JobVersion {
  std::string state;
  std::string reason;
  int attempt = 0;
  bool operator==(const JobVersion& o) const {
    return state == o.state && reason == o.reason && attempt == o.attempt;
  }
  bool operator!=(const JobVersion& o) const { return !(*this == o); }
};

struct LogRead {
  std::string data;
  int64_t next_offset = 0;
  bool eof = false;  ///< the attempt ended and everything stored was read
  int attempt = 0;   ///< the attempt read
  int latest_attempt = 0;
};

class PgJobStore {
 public:
  explicit PgJobStore(PgPool& pool);

  /// Inserts all items in one transaction (one commit for the batch). A request id seen
  /// before for the tenant returns the existing job with created=false.
  std::vector<SubmitOutcome> SubmitBatch(const std::vector<SubmitItem>& items);

  /// `tenant_id` empty = any tenant. NOT_FOUND when absent or another tenant's.
  absl::StatusOr<surplus::v1::Job> GetJob(const std::string& job_id, const std::string& tenant_id);
  absl::StatusOr<JobPage> ListJobs(const std::string& tenant_id,
                                   const std::vector<surplus::v1::JobState>& states, int page_size,
                                   const std::string& page_token);
  /// Pending: cancelled now. Running: a stop with `notice_ms` is requested; the job ends
  /// CANCELLED when the worker reports it stopped. FAILED_PRECONDITION once ended.
  absl::StatusOr<surplus::v1::Job> CancelJob(const std::string& job_id, const std::string& tenant_id,
                                             int64_t now_ms, int64_t notice_ms);
  absl::StatusOr<std::map<std::string, JobVersion>> Versions(const std::vector<std::string>& ids);

  // --- scheduling loop -------------------------------------------------------------
  /// Pending and running jobs as the scheduler sees them.
  absl::StatusOr<std::vector<scheduler::JobView>> ActiveJobs();
  /// Jobs as the scheduler reads them, in `tx`: pending and running ones changed since
  /// `since_xid` (a transaction id watermark; empty = all active jobs). Ids of changed jobs
  /// that are no longer active are appended to `ended` (when not null).
  static std::vector<scheduler::JobView> ReadSchedulerJobs(pqxx::transaction_base& tx,
                                                           const std::string& since_xid,
                                                           std::vector<std::string>* ended);
  /// Running jobs with a placement on `node`, with their GPU indices there.
  absl::StatusOr<std::vector<std::pair<std::string, std::vector<int>>>> RunningOnNode(const std::string& node);
  /// Persists one round's decisions in one transaction, with the round's market_rounds
  /// rows (`price_rows`): outbid reasons quote the latest row of their pool when read.
  absl::Status ApplyDecisions(const scheduler::Decisions& d,
                              const std::map<std::string, std::string>& job_models, int64_t now_ms,
                              int64_t notice_ms, const std::vector<RoundPrice>& price_rows = {});
  /// Requests a stop of running jobs on these GPUs (owner reclaim etc.).
  /// Jobs of nodes lost: LOST, or PENDING again when they asked to be requeued.
  absl::StatusOr<std::vector<std::string>> MarkLostNodes(int64_t lost_after_ms, int64_t now_ms);

  // --- workers -----------------------------------------------------------------------
  absl::StatusOr<std::vector<DesiredJob>> DesiredForNode(const std::string& node);
  absl::Status ApplyStatus(const std::string& node, const surplus::v1::JobStatus& status,
                           int64_t now_ms);
  absl::Status AppendLog(const surplus::v1::JobLogChunk& chunk);
  /// Reads an attempt's log (0 = the latest attempt) from `offset`.
  absl::StatusOr<LogRead> ReadLog(const std::string& job_id, int attempt, int64_t offset, int max_bytes);

 private:
  PgPool& pool_;
};

std::string StateName(surplus::v1::JobState s);
surplus::v1::JobState StateFromName(const std::string& s);
bool IsTerminal(surplus::v1::JobState s);

}  // namespace surplus::store
