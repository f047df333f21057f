#pragma once
// JobCgroups: one control group per exec job, with CPU and memory limits, where the host
// allows it.
//
// Layouts, detected under a cgroup file system root (normally /sys/fs/cgroup):
//   - v2 (unified): `<root>/<name>/<job>`, with cpu.max and memory.max (+ memory.swap.max
//     = 0). The root's and `<name>`'s cgroup.subtree_control get +cpu +memory.
//   - v1: `<root>/cpu/<name>/<job>` (cpu.cfs_quota_us / cpu.cfs_period_us) and
//     `<root>/memory/<name>/<job>` (memory.limit_in_bytes).
// The job's process joins every group of the job before it execs (the runner writes its
// pid to the cgroup.procs files Create() returns), so everything it starts is limited.
// Not thread-safe; the worker calls it from its supervisor only.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace surplus::worker {

struct CgroupLimits {
  /// CPU time per period, in microseconds (0 = no CPU limit).
  int64_t cpu_quota_us = 0;
  int64_t cpu_period_us = 100'000;
  /// Memory limit in bytes (0 = no memory limit).
  int64_t memory_bytes = 0;
};

/// The limits of a job that asks for host CPU (millicores) and memory (MiB); a request of
/// 0 keeps what `share` (ShareOfNode) gives.
CgroupLimits WithRequests(CgroupLimits share, int64_t cpu_millis, int64_t memory_mib);

/// CPU and memory a job gets on a node: the share of the node's GPU compute it holds
/// (compute units of its slice x its GPUs over the node's 7 x GPUs) of the node's CPUs
/// and of its memory less a reserve for the system, at least 0.1 CPU and 256 MiB.
CgroupLimits ShareOfNode(int job_units, int node_gpus, int node_cpus, int64_t node_memory_bytes,
                         int64_t reserve_bytes);

class JobCgroups {
 public:
  enum class Mode { kV1, kV2 };

  /// Detects the layout under `fs_root` and creates the worker's parent group `name`.
  /// FailedPrecondition (saying why) when the host offers no usable CPU and memory
  /// controllers or they cannot be written (not root, read-only).
  static absl::StatusOr<JobCgroups> Open(const std::string& fs_root, const std::string& name);

  Mode mode() const { return mode_; }
  std::string ModeName() const { return mode_ == Mode::kV2 ? "cgroup v2" : "cgroup v1"; }

  /// Creates (or resets) the job's groups with `limits`; returns the cgroup.procs files
  /// its process must join.
  absl::StatusOr<std::vector<std::string>> Create(const std::string& job_id, const CgroupLimits& limits);
  /// Removes the job's groups (once its processes are gone; a group still in use stays).
  void Remove(const std::string& job_id);
  /// Folders of the job's groups (for tests and diagnostics).
  std::vector<std::string> Dirs(const std::string& job_id) const;

 private:
  Mode mode_ = Mode::kV2;
  std::vector<std::string> parents_;  // v2: one; v1: cpu, memory
};

/// Identity an exec job runs as (the worker's own when not set).
struct JobUser {
  bool set = false;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string name;
};

/// Looks a user up by name; NotFound when there is none.
absl::StatusOr<JobUser> LookupJobUser(const std::string& name);

}  // namespace surplus::worker
