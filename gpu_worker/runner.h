#pragma once
// Runs `exec` jobs as child processes of the worker.
//
// Each job runs in its own process group (so a stop reaches everything it started), in
// its own working folder, with a clean environment (PATH, HOME, the job's variables and
// SURPLUS_JOB_ID / SURPLUS_PREEMPT_NOTICE_FILE), stdin from /dev/null and stdout+stderr
// appended to its log file. A monitor thread reaps exits and enforces stop deadlines.
// Nothing here talks to the network: jobs keep running whatever happens to the control
// plane, and destroying the Runner leaves them running (the worker may restart and
// Adopt them). Thread-safe.
//
// The Runner reaps only the pids it started; nothing else in the process may call
// waitpid(-1) / wait().

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace surplus::worker {

/// Environment variable naming the file a job should watch for a preemption notice.
inline constexpr char kPreemptNoticeEnv[] = "SURPLUS_PREEMPT_NOTICE_FILE";
/// Environment variable holding the job's id.
inline constexpr char kJobIdEnv[] = "SURPLUS_JOB_ID";

struct RunnerOptions {
  /// PATH of the base environment (a job may override it).
  std::string base_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  /// How often the monitor thread checks for exits and expired stop deadlines; a
  /// deadline is enforced at most this late.
  absl::Duration poll_interval = absl::Milliseconds(50);
  /// When a job's main process exits, SIGKILL what is left of its process group, so
  /// that no stray process keeps holding the slice.
  bool kill_group_on_exit = true;
};

struct ExecSpec {
  std::string job_id;
  /// argv[0] without a '/' is searched in the job's PATH; with one it is used as is
  /// (relative to work_dir).
  std::vector<std::string> argv;
  /// The job's variables, set over the base (PATH, HOME=work_dir). The runner's own
  /// variables (kJobIdEnv, kPreemptNoticeEnv) cannot be overridden.
  std::map<std::string, std::string> env;
  /// Created (with parents) if missing; the job's current folder and HOME.
  std::string work_dir;
  /// stdout and stderr are appended here; created 0640 if missing.
  std::string log_path;
  /// Where Stop writes the notice; defaults to work_dir + "/.surplus_preempt_notice".
  std::string notice_path;
  /// cgroup.procs files the job's process joins before it execs (JobCgroups::Create);
  /// failing to join any means the job does not start.
  std::vector<std::string> cgroup_procs;
  /// Run as this user and group instead of the worker's (the work folder and log are
  /// handed to it); supplementary groups are dropped.
  bool as_user = false;
  uint32_t uid = 0;
  uint32_t gid = 0;
};

enum class ExitKind {
  kExited,    ///< exit_code is set
  kSignaled,  ///< signal is set
  kVanished,  ///< an adopted process is gone; its status cannot be known
};

struct JobExit {
  std::string job_id;
  pid_t pid = 0;
  ExitKind kind = ExitKind::kExited;
  int exit_code = -1;  ///< kExited: 0..255
  int signal = 0;      ///< kSignaled: the terminating signal
  bool stop_requested = false;      ///< Stop was called
  bool killed_at_deadline = false;  ///< the group got SIGKILL when the notice ran out
  std::string stop_reason;
  /// Time from Start (or Adopt) to the exit being seen, monotonic clock.
  absl::Duration runtime;
};

/// A running job, as the worker may persist it to Adopt it after a restart.
struct RunningJob {
  std::string job_id;
  pid_t pid = 0;                ///< also the process group id
  uint64_t start_ticks = 0;     ///< /proc/<pid>/stat starttime; guards against pid reuse
  std::string notice_path;
  bool adopted = false;
};

/// starttime of `pid` from /proc/<pid>/stat (clock ticks since boot). NotFound when
/// the process does not exist.
absl::StatusOr<uint64_t> ProcessStartTicks(pid_t pid);

class Runner {
 public:
  explicit Runner(RunnerOptions options = {});
  /// Stops the monitor thread. Running jobs are left running and unreaped.
  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  /// Starts the job and returns its pid once exec has succeeded. Any error means the
  /// job did not start (no exit will be reported for it): AlreadyExists for a job id
  /// in use; InvalidArgument for a bad spec; NotFound / PermissionDenied when argv[0]
  /// cannot be executed, FailedPrecondition when the folder or log cannot be set up
  /// (message says "failed to start" and why). Exec failure travels over a
  /// close-on-exec pipe, so it is never confused with a job exiting 127.
  absl::StatusOr<pid_t> Start(const ExecSpec& spec);

  /// Preempts a job: writes the notice file (atomically; "reason=...",
  /// "deadline_unix_ms=..." and "notice_ms=..." lines), sends SIGTERM to its process
  /// group, and SIGKILL to the group once `notice` has passed (at once when notice <= 0).
  /// A second Stop can only bring the deadline forward. NotFound for an unknown job.
  absl::Status Stop(absl::string_view job_id, absl::Duration notice, absl::string_view reason);

  /// Tracks a job started by an earlier incarnation of the worker (not our child, so
  /// its exit status is unknown: its exit is reported as kVanished). The pid must be
  /// alive and its start ticks match `start_ticks` (0: skip the check).
  absl::Status Adopt(absl::string_view job_id, pid_t pid, uint64_t start_ticks,
                     std::string notice_path);

  /// Exits seen since the last call, oldest first. Never blocks.
  std::vector<JobExit> TakeExits();

  /// Waits up to `timeout` for `job_id`'s exit and takes it (other exits stay queued).
  std::optional<JobExit> WaitForExit(absl::string_view job_id, absl::Duration timeout);

  bool IsRunning(absl::string_view job_id) const;
  std::vector<RunningJob> RunningJobs() const;

  /// SIGKILLs every job's process group (e.g. node drain). Exits are reported as usual.
  void KillAll();

 private:
  struct Job {
    RunningJob info;
    int64_t started_steady_ns = 0;  // std::chrono::steady_clock
    bool stop_requested = false;
    std::string stop_reason;
    int64_t kill_deadline_steady_ns = 0;  // steady_clock; 0: no stop pending
    bool killed = false;              // SIGKILL sent (deadline or KillAll)
    bool killed_at_deadline = false;  // by the stop deadline
  };

  void MonitorLoop();
  void PollLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RunnerOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::string, Job, std::less<>> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<JobExit> exits_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::thread monitor_;
};

}  // namespace surplus::worker
