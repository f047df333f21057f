#include "surplus/host_resources.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "surplus/gpu_models.h"

namespace surplus {

int64_t HostCharge(int64_t asked, int64_t node_total, int64_t job_units, int node_gpus) {
  if (asked > 0) return asked;
  if (node_total <= 0) return 0;
  return node_total * std::max<int64_t>(0, job_units) / (int64_t{kComputeUnitsPerGpu} * std::max(1, node_gpus));
}

std::string FormatCpus(int64_t cpu_millis) {
  std::string text = absl::StrCat(cpu_millis / 1000);
  if (int64_t frac = cpu_millis % 1000; frac != 0) {
    std::string digits = absl::StrCat(1000 + frac).substr(1);  // three digits
    while (digits.back() == '0') digits.pop_back();
    absl::StrAppend(&text, ".", digits);
  }
  return absl::StrCat(text, cpu_millis == 1000 ? " CPU" : " CPUs");
}

std::string FormatMemoryMib(int64_t memory_mib) {
  return memory_mib % 1024 == 0 ? absl::StrCat(memory_mib / 1024, " GiB") : absl::StrCat(memory_mib, " MiB");
}

std::string FormatHostRequest(int64_t cpu_millis, int64_t memory_mib) {
  std::string text;
  if (cpu_millis > 0) text = FormatCpus(cpu_millis);
  if (memory_mib > 0) absl::StrAppend(&text, text.empty() ? "" : ", ", FormatMemoryMib(memory_mib));
  return text;
}

}  // namespace surplus
