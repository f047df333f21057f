#pragma once
// How host CPU and memory amounts read in reasons and views.

#include <cstdint>
#include <string>

namespace surplus {

/// Millicores as CPUs: 12000 -> "12 CPUs", 1000 -> "1 CPU", 500 -> "0.5 CPUs", 1250 -> "1.25 CPUs".
std::string FormatCpus(int64_t cpu_millis);
/// MiB as GiB when whole: 98304 -> "96 GiB", 1500 -> "1500 MiB".
std::string FormatMemoryMib(int64_t memory_mib);
/// What a job asks of its node's host: "12 CPUs, 96 GiB", "12 CPUs", or "" when it asks
/// for nothing (a zero field is left out).
std::string FormatHostRequest(int64_t cpu_millis, int64_t memory_mib);

}  // namespace surplus
