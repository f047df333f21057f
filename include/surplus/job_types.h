#pragma once
// Value types shared by the pure libraries and the services.

#include <cstdint>
#include <string>

namespace surplus {

enum class Tier { kSpot, kOnDemand };

enum class JobState { kPending, kRunning, kSucceeded, kFailed, kCancelled, kPreempted, kLost };

/// What a job asks for. Exactly one kind is set.
struct JobShape {
  enum class Kind { kSlice, kWholeGpus, kGang };
  Kind kind = Kind::kWholeGpus;
  std::string slice_profile;  ///< kSlice: e.g. "1g.10gb"
  int gpus_per_node = 1;      ///< kWholeGpus / kGang
  int nodes = 1;              ///< kGang: K nodes (all or nothing, one fabric)
  /// Host CPU (millicores) and memory (MiB) on each node; 0 = the job's share of the node in
  /// proportion to the GPU capacity it takes there.
  int64_t cpu_millis = 0;
  int64_t memory_mib = 0;

  static JobShape Slice(std::string profile) {
    JobShape s;
    s.kind = Kind::kSlice;
    s.slice_profile = std::move(profile);
    s.gpus_per_node = 0;
    return s;
  }
  static JobShape WholeGpus(int n) {
    JobShape s;
    s.kind = Kind::kWholeGpus;
    s.gpus_per_node = n;
    return s;
  }
  static JobShape Gang(int nodes, int gpus_per_node) {
    JobShape s;
    s.kind = Kind::kGang;
    s.nodes = nodes;
    s.gpus_per_node = gpus_per_node;
    return s;
  }
};

}  // namespace surplus
