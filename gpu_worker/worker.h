#pragma once
// The worker agent: registers the node, keeps one Connect stream to the control plane,
// runs the jobs it is assigned in slices prepared by a GpuBackend, streams their logs,
// meters their usage into the spool and delivers it to billing.
//
// The parts that decide (JobTable: what to do with an assignment or a stop; UsageMeter:
// how a run is cut into usage intervals; LogCursor: which log bytes to send next) are
// plain classes without I/O, so they can be tested in microseconds. Worker wires them to
// gRPC, the Runner, the backend and the spool.
//
// Restart semantics: a worker that restarts with an existing state folder cannot learn
// the exit status of jobs an earlier incarnation started. It SIGKILLs the process groups
// recorded in <state>/running/ (when the recorded start time still matches the pid) and
// reports those runs PHASE_STOPPED, exit code -1. A worker asked to exit (SIGTERM/SIGINT)
// stops its jobs with a short notice (WorkerOptions::shutdown_notice_ms) and reports them,
// so a clean shutdown leaves nothing behind.

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gpu_worker/gpu_backend.h"
#include "gpu_worker/usage_record.h"
#include "surplus/v1/worker.pb.h"

namespace surplus::worker {

// --- JobTable --------------------------------------------------------------------

/// What to do with an Assignment.
enum class AssignAction {
  kStart,             ///< new attempt: prepare the slice and start it
  kAlreadyRunning,    ///< this attempt runs: nothing to do
  kResendFinal,       ///< this attempt already ended: send its final status again
  kStopOlderAttempt,  ///< an older attempt of the job still runs: stop it, start later
  kStale,             ///< a newer attempt runs: ignore
};

/// What to do with a Stop. More than one may apply.
struct StopDecision {
  bool stop_running = false;          ///< stop the attempt that runs (running_attempt)
  int running_attempt = 0;
  bool resend_final = false;          ///< the attempt ended: send its final status again
  bool report_never_started = false;  ///< record and report "stopped before it started"
};

/// The job attempts this worker runs and the final statuses of those that ended.
///
/// Invariants: a job id has at most one running attempt; an attempt is never both
/// running and finished; a finished attempt never runs again on this worker (so a
/// repeated Assignment re-sends its final status instead of rerunning it).
class JobTable {
 public:
  struct Finished {
    surplus::v1::JobStatus status;  ///< the final status (not PHASE_STARTED)
    /// The control plane has (very likely) recorded it: sent on a stream that stayed up
    /// long enough afterwards. Unconfirmed statuses are re-sent on every (re)connect.
    bool confirmed = false;
  };

  AssignAction OnAssignment(const std::string& job_id, int attempt) const;
  /// `attempt` -1 means "whatever attempt runs" (a job no longer assigned here).
  StopDecision OnStop(const std::string& job_id, int attempt) const;

  /// Marks an attempt as running. Requires: not running and not finished.
  void Started(const std::string& job_id, int attempt);
  /// Moves an attempt (running or never started) to finished with `status`.
  void Finish(const surplus::v1::JobStatus& status);
  /// Marks a finished attempt unconfirmed again (the control plane asked about it).
  void Unconfirm(const std::string& job_id, int attempt);
  void Confirm(const std::string& job_id, int attempt);

  std::optional<int> RunningAttempt(const std::string& job_id) const;
  const Finished* FindFinished(const std::string& job_id, int attempt) const;
  std::vector<surplus::v1::JobStatus> Unconfirmed() const;
  const std::map<std::string, int>& running() const { return running_; }
  size_t finished_count() const { return finished_.size(); }

  /// Forgets finished attempts that ended before `min_at_ms`, then the oldest ones
  /// beyond `max_entries`.
  void Prune(int64_t min_at_ms, size_t max_entries);

  /// Text form of the finished attempts (one line each), for the state folder.
  std::string SerializeFinished() const;
  /// Restores finished attempts from SerializeFinished's text. DataLoss on a bad line.
  absl::Status ParseFinished(absl::string_view text);

 private:
  using Key = std::pair<std::string, int>;  // (job id, attempt)
  std::map<std::string, int> running_;      // job id -> attempt
  std::map<Key, Finished> finished_;
};

// --- UsageMeter ------------------------------------------------------------------

/// Maps the monotonic clock to wall time through one anchor taken when a run starts, so
/// that wall-clock steps (NTP) never make the run's intervals overlap or leave gaps.
struct WallAnchor {
  int64_t wall_ms = 0;    ///< UTC epoch ms at the anchor
  int64_t steady_ms = 0;  ///< monotonic ms at the anchor
  int64_t ToWall(int64_t steady) const { return wall_ms + (steady - steady_ms); }
};

/// Cuts one run of a job into usage intervals that tile it exactly: each interval starts
/// where the previous ended. GPU-milliseconds use the cumulative-floor rule: an interval
/// ending `e` ms into the run gets GpuMilliseconds(e) - GpuMilliseconds(s), so the sum
/// over the run equals GpuMilliseconds(run length) with no rounding drift.
class UsageMeter {
 public:
  UsageMeter(int64_t start_steady_ms, int compute_units, int gpus)
      : start_(start_steady_ms), cut_(start_steady_ms), compute_units_(compute_units),
        gpus_(gpus) {}

  /// The interval [last cut, now) as a record (fields other than times and gpu_ms are
  /// left empty for the caller). Does not advance: call Commit once it is stored.
  UsageRecord Peek(int64_t now_steady_ms, const WallAnchor& anchor, bool is_final) const;
  void Commit(const UsageRecord& record, const WallAnchor& anchor);

  int64_t start_steady_ms() const { return start_; }
  int64_t cut_steady_ms() const { return cut_; }
  bool cut_any() const { return cut_ != start_; }

 private:
  int64_t start_;
  int64_t cut_;
  int compute_units_;
  int gpus_;
};

// --- LogCursor -------------------------------------------------------------------

/// Which bytes of a job's log file go out next as JobLogChunks. A chunk is "unacked"
/// until the stream accepted it; after a reconnect the unacked chunks are sent again
/// with the same boundaries, because the control plane keeps the first chunk stored at
/// an offset and ignores later ones.
class LogCursor {
 public:
  static constexpr int64_t kMaxChunkBytes = 64 * 1024;
  /// The control plane keeps at most this much log per job.
  static constexpr int64_t kMaxLogBytes = 8 << 20;
  static constexpr size_t kMaxUnacked = 4;

  /// The next chunk [offset, offset + length) of a file of `file_size` bytes, if there
  /// is new data within kMaxLogBytes and fewer than kMaxUnacked chunks await an ack.
  std::optional<std::pair<int64_t, int64_t>> Next(int64_t file_size);
  void Ack();  ///< the oldest unacked chunk was accepted
  const std::deque<std::pair<int64_t, int64_t>>& unacked() const { return unacked_; }
  /// Everything up to `file_size` was accepted (or lies beyond kMaxLogBytes).
  bool Drained(int64_t file_size) const;

 private:
  int64_t next_ = 0;
  std::deque<std::pair<int64_t, int64_t>> unacked_;
};

// --- Helpers ---------------------------------------------------------------------

/// A job id or name made safe as a file name: [A-Za-z0-9._-] kept, anything else as
/// "%XX"; never empty, never "." or "..".
std::string SafeFileName(absl::string_view name);

/// Memory-slot mask a placement takes on each of its GPUs: the slice profile's mask at
/// `slot_start`, or every slot for a whole GPU (or an unknown profile).
uint8_t PlacementMask(absl::string_view gpu_model, absl::string_view slice_profile,
                      int slot_start);

/// The final status of an exec run from how its process ended. Exit by signal N is
/// reported as 128 + N. `stop_reason` non-empty: the run ended after a Stop (PHASE_STOPPED);
/// `runtime_limit_s` > 0: it was stopped for running longer than that.
surplus::v1::JobStatus ExecFinalStatus(const std::string& job_id, int attempt, bool signaled,
                                       int code_or_signal, const std::string& stop_reason,
                                       int64_t runtime_limit_s, int64_t at_ms);

// --- Worker ----------------------------------------------------------------------

struct WorkerOptions {
  std::string node;
  std::string gpu_model = "H100-80GB";
  int gpus = 8;
  std::string fabric;
  std::string control_endpoint = "127.0.0.1:50051";
  std::string billing_endpoint = "127.0.0.1:50052";
  std::string tls_ca_file;  ///< empty: plaintext
  std::string api_key;      ///< worker-role key, sent as a bearer token
  std::string state_dir = "surplus-worker-state";
  int64_t telemetry_ms = 1000;
  /// Host CPU (millicores) and memory (MiB) offered to jobs; 0 = this host's CPUs, and its
  /// memory less a reserve for the system.
  int64_t host_cpu_millis = 0;
  int64_t host_memory_mib = 0;
  int64_t usage_interval_ms = 5000;
  int64_t log_poll_ms = 500;
  /// Notice given to running jobs when the worker is asked to exit.
  int64_t shutdown_notice_ms = 5000;
  /// One cgroup per exec job, limited to its share of the node's CPUs and memory (its
  /// share of the node's GPU compute): "auto" where the host allows it, "on" (the worker
  /// refuses to start without), "off".
  std::string job_cgroups = "auto";
  std::string cgroup_fs_root = "/sys/fs/cgroup";
  /// Run exec jobs as this (unprivileged) user; empty = as the worker.
  std::string job_user;
};

/// Hooks a backend may offer beyond GpuBackend (the CUDA backend tells owner processes
/// from the worker's own).
struct BackendHooks {
  /// Number of owner processes on a GPU. Default: processes that are not a running
  /// exec job's main process.
  std::function<int(const GpuTelemetry&)> count_owner_processes;
  /// Called after an exec job's process started.
  std::function<void(const std::string& job_id, pid_t pid)> on_job_process;
};

class Worker {
 public:
  /// Opens the state folder (creating it), recovers from an earlier incarnation (see the
  /// file comment) and opens the usage spool. Does not touch the network.
  static absl::StatusOr<std::unique_ptr<Worker>> Create(WorkerOptions options,
                                                        std::unique_ptr<GpuBackend> backend,
                                                        BackendHooks hooks = {});
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// Runs until `stop` becomes true, then stops the jobs with the shutdown notice,
  /// reports what it can within a few seconds and returns.
  absl::Status Run(const std::atomic<bool>& stop);

 private:
  struct Impl;
  explicit Worker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace surplus::worker
