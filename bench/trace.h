#pragma once
// The Alibaba 2023 GPU trace (openb): node and pod lists as CSV, read by header name so
// that every pod-list variant works (some lack qos and time columns).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "surplus/job_types.h"

namespace surplus::bench {

struct TraceNode {
  std::string name;
  int gpus = 0;
  std::string model;
  int64_t cpu_milli = 0;   ///< 0 when absent
  int64_t memory_mib = 0;  ///< 0 when absent
};

struct TracePod {
  std::string name;
  int num_gpu = 0;
  int gpu_milli = 0;      ///< per GPU, of 1000
  int64_t cpu_milli = 0;   ///< 0 when absent
  int64_t memory_mib = 0;  ///< 0 when absent
  std::string qos;        ///< LS, Guaranteed, Burstable, BE; empty when absent
  int64_t creation_s = 0;
  int64_t deletion_s = -1;  ///< -1 when absent
  int64_t order = 0;        ///< row order (creation order when times are absent)
};

absl::StatusOr<std::vector<TraceNode>> ReadTraceNodes(const std::string& path);
/// Reads pods, sorted by creation time (stable). `has_times` / `has_qos` say which
/// optional columns the file has.
absl::StatusOr<std::vector<TracePod>> ReadTracePods(const std::string& path, bool* has_times,
                                                   bool* has_qos);

/// The shape a GPU pod asks for on an H100-class GPU: a fractional GPU becomes the
/// smallest slice profile with enough compute units (ceil(gpu_milli * 7 / 1000)); a whole
/// GPU or several become whole GPUs. CPU-only pods have no shape (returns false).
bool PodShape(const TracePod& pod, JobShape* shape, int64_t* units);

}  // namespace surplus::bench
