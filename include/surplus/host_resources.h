#pragma once
// Host CPU and memory: what a job is charged on its node, and how amounts read in reasons
// and views.

#include <cstdint>
#include <string>

namespace surplus {

/// What a job is charged of one host resource (CPU millicores or memory MiB) on a node
/// that has `node_total` of it for jobs: what it asked (`asked` > 0), else its share for
/// the `job_units` compute units it holds of the node's 7 x `node_gpus` (rounded down;
/// 0 when the node's size is unknown). The scheduler, the worker's limits and the node
/// view all charge by this rule.
int64_t HostCharge(int64_t asked, int64_t node_total, int64_t job_units, int node_gpus);

/// Millicores as CPUs: 12000 -> "12 CPUs", 1000 -> "1 CPU", 500 -> "0.5 CPUs", 1250 -> "1.25 CPUs".
std::string FormatCpus(int64_t cpu_millis);
/// MiB as GiB when whole: 98304 -> "96 GiB", 1500 -> "1500 MiB".
std::string FormatMemoryMib(int64_t memory_mib);
/// What a job asks of its node's host: "12 CPUs, 96 GiB", "12 CPUs", or "" when it asks
/// for nothing (a zero field is left out).
std::string FormatHostRequest(int64_t cpu_millis, int64_t memory_mib);

}  // namespace surplus
