#include "bench/trace.h"

#include <algorithm>
#include <fstream>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "surplus/gpu_models.h"

namespace surplus::bench {
namespace {

struct Csv {
  std::map<std::string, size_t> columns;
  std::vector<std::vector<std::string>> rows;
};

absl::StatusOr<Csv> ReadCsv(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  Csv csv;
  std::string line;
  if (!std::getline(in, line)) return absl::InvalidArgumentError(absl::StrCat(path, ": empty"));
  if (!line.empty() && line.back() == '\r') line.pop_back();
  std::vector<std::string> header = absl::StrSplit(line, ',');
  for (size_t i = 0; i < header.size(); ++i) csv.columns[header[i]] = i;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    std::vector<std::string> row = absl::StrSplit(line, ',');
    row.resize(header.size());
    csv.rows.push_back(std::move(row));
  }
  return csv;
}

// Index of a column, -1 when the file has none of that name.
int Column(const Csv& csv, const char* name) {
  auto it = csv.columns.find(name);
  return it == csv.columns.end() ? -1 : static_cast<int>(it->second);
}

int64_t ToInt(const std::string& s, int64_t def) {
  int64_t v;
  return absl::SimpleAtoi(s, &v) ? v : def;
}

}  // namespace

absl::StatusOr<std::vector<TraceNode>> ReadTraceNodes(const std::string& path) {
  auto csv = ReadCsv(path);
  if (!csv.ok()) return csv.status();
  for (const char* need : {"sn", "gpu"}) {
    if (!csv->columns.count(need)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": no column '", need, "'"));
    }
  }
  const size_t sn = csv->columns["sn"], gpu = csv->columns["gpu"];
  const bool has_model = csv->columns.count("model") > 0;
  const int cpu = Column(*csv, "cpu_milli"), memory = Column(*csv, "memory_mib");
  std::vector<TraceNode> nodes;
  for (const auto& row : csv->rows) {
    TraceNode n;
    n.name = row[sn];
    n.gpus = static_cast<int>(ToInt(row[gpu], 0));
    if (has_model) n.model = row[csv->columns["model"]];
    if (cpu >= 0) n.cpu_milli = std::max<int64_t>(0, ToInt(row[cpu], 0));
    if (memory >= 0) n.memory_mib = std::max<int64_t>(0, ToInt(row[memory], 0));
    nodes.push_back(std::move(n));
  }
  return nodes;
}

absl::StatusOr<std::vector<TracePod>> ReadTracePods(const std::string& path, bool* has_times,
                                                   bool* has_qos) {
  auto csv = ReadCsv(path);
  if (!csv.ok()) return csv.status();
  for (const char* need : {"name", "num_gpu", "gpu_milli"}) {
    if (!csv->columns.count(need)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": no column '", need, "'"));
    }
  }
  auto col = [&](const char* name) { return Column(*csv, name); };
  const int name = col("name"), num_gpu = col("num_gpu"), gpu_milli = col("gpu_milli");
  const int qos = col("qos"), created = col("creation_time"), deleted = col("deletion_time");
  const int cpu = col("cpu_milli"), memory = col("memory_mib");
  *has_times = created >= 0 && deleted >= 0;
  *has_qos = qos >= 0;
  std::vector<TracePod> pods;
  int64_t order = 0;
  for (const auto& row : csv->rows) {
    TracePod p;
    p.name = row[name];
    p.num_gpu = static_cast<int>(ToInt(row[num_gpu], 0));
    p.gpu_milli = static_cast<int>(ToInt(row[gpu_milli], 0));
    if (qos >= 0) p.qos = row[qos];
    if (cpu >= 0) p.cpu_milli = std::max<int64_t>(0, ToInt(row[cpu], 0));
    if (memory >= 0) p.memory_mib = std::max<int64_t>(0, ToInt(row[memory], 0));
    p.order = order++;
    p.creation_s = created >= 0 ? ToInt(row[created], 0) : p.order;
    p.deletion_s = deleted >= 0 ? ToInt(row[deleted], -1) : -1;
    pods.push_back(std::move(p));
  }
  std::stable_sort(pods.begin(), pods.end(),
                   [](const TracePod& a, const TracePod& b) { return a.creation_s < b.creation_s; });
  return pods;
}

bool PodShape(const TracePod& pod, JobShape* shape, int64_t* units) {
  if (pod.num_gpu <= 0) return false;
  if (pod.num_gpu > 1 || pod.gpu_milli >= 1000 || pod.gpu_milli <= 0) {
    *shape = JobShape::WholeGpus(pod.num_gpu);
    *units = int64_t{kComputeUnitsPerGpu} * pod.num_gpu;
    return true;
  }
  const int need = (pod.gpu_milli * kComputeUnitsPerGpu + 999) / 1000;
  const GpuModel& model = *FindGpuModel("H100-80GB");
  for (const SliceProfile& p : model.profiles) {  // smallest first
    if (p.compute_units >= need) {
      *shape = p.IsWholeGpu() ? JobShape::WholeGpus(1) : JobShape::Slice(p.name);
      *units = p.compute_units;
      return true;
    }
  }
  return false;
}

}  // namespace surplus::bench
