#include "gpu_worker/cgroups.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "surplus/gpu_models.h"

namespace surplus::worker {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status WriteValue(const std::string& path, const std::string& value) {
  std::ofstream out(path, std::ios::out | std::ios::trunc);
  if (!out) return absl::FailedPreconditionError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  out << value;
  out.flush();
  if (!out) return absl::FailedPreconditionError(absl::StrCat("cannot write '", value, "' to ", path));
  return absl::OkStatus();
}

absl::Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool HasControllers(const std::string& list, std::initializer_list<const char*> wanted) {
  std::vector<std::string> have = absl::StrSplit(list, absl::ByAnyChar(" \n"), absl::SkipEmpty());
  for (const char* w : wanted) {
    if (std::find(have.begin(), have.end(), w) == have.end()) return false;
  }
  return true;
}

}  // namespace

CgroupLimits ShareOfNode(int job_units, int node_gpus, int node_cpus, int64_t node_memory_bytes,
                         int64_t reserve_bytes) {
  CgroupLimits l;
  const int64_t total_units = int64_t{kComputeUnitsPerGpu} * std::max(1, node_gpus);
  const int64_t units = std::clamp<int64_t>(job_units, 1, total_units);
  l.cpu_quota_us = std::max<int64_t>(l.cpu_period_us / 10, l.cpu_period_us * std::max(1, node_cpus) * units / total_units);
  const int64_t usable = std::max<int64_t>(0, node_memory_bytes - reserve_bytes);
  l.memory_bytes = std::max<int64_t>(int64_t{256} << 20, usable / total_units * units + usable % total_units * units / total_units);
  return l;
}

CgroupLimits WithRequests(CgroupLimits share, int64_t cpu_millis, int64_t memory_mib) {
  if (cpu_millis > 0) share.cpu_quota_us = std::max<int64_t>(1000, share.cpu_period_us * cpu_millis / 1000);
  if (memory_mib > 0) share.memory_bytes = memory_mib << 20;
  return share;
}

absl::StatusOr<JobCgroups> JobCgroups::Open(const std::string& fs_root, const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat("bad cgroup name '", name, "'"));
  }
  JobCgroups g;
  const std::string v2_controllers = fs_root + "/cgroup.controllers";
  if (Exists(v2_controllers)) {
    if (!HasControllers(ReadAll(v2_controllers), {"cpu", "memory"})) {
      return absl::FailedPreconditionError(
          absl::StrCat(fs_root, " (cgroup v2) does not offer the cpu and memory controllers"));
    }
    g.mode_ = Mode::kV2;
    const std::string root_subtree = fs_root + "/cgroup.subtree_control";
    if (!HasControllers(ReadAll(root_subtree), {"cpu", "memory"})) {
      if (absl::Status s = WriteValue(root_subtree, "+cpu +memory"); !s.ok()) return s;
    }
    const std::string parent = fs_root + "/" + name;
    if (absl::Status s = MakeDir(parent); !s.ok()) return s;
    if (absl::Status s = WriteValue(parent + "/cgroup.subtree_control", "+cpu +memory"); !s.ok()) return s;
    g.parents_ = {parent};
    return g;
  }
  const std::string cpu = fs_root + "/cpu";
  const std::string memory = fs_root + "/memory";
  if (Exists(cpu + "/cpu.cfs_quota_us") && Exists(memory + "/memory.limit_in_bytes")) {
    g.mode_ = Mode::kV1;
    for (const std::string& h : {cpu, memory}) {
      if (absl::Status s = MakeDir(h + "/" + name); !s.ok()) return s;
      g.parents_.push_back(h + "/" + name);
    }
    return g;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no cgroup v2 or v1 cpu and memory hierarchies under ", fs_root));
}

std::vector<std::string> JobCgroups::Dirs(const std::string& job_id) const {
  std::vector<std::string> out;
  for (const std::string& p : parents_) out.push_back(p + "/job-" + job_id);
  return out;
}

absl::StatusOr<std::vector<std::string>> JobCgroups::Create(const std::string& job_id, const CgroupLimits& limits) {
  if (job_id.empty() || job_id.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("bad job id '", job_id, "' for a cgroup"));
  }
  std::vector<std::string> procs;
  const std::vector<std::string> dirs = Dirs(job_id);
  for (const std::string& d : dirs) {
    if (absl::Status s = MakeDir(d); !s.ok()) return s;
    procs.push_back(d + "/cgroup.procs");
  }
  if (mode_ == Mode::kV2) {
    const std::string& d = dirs[0];
    const std::string cpu = limits.cpu_quota_us > 0
                                ? absl::StrCat(limits.cpu_quota_us, " ", limits.cpu_period_us)
                                : absl::StrCat("max ", limits.cpu_period_us);
    if (absl::Status s = WriteValue(d + "/cpu.max", cpu); !s.ok()) return s;
    const std::string mem = limits.memory_bytes > 0 ? absl::StrCat(limits.memory_bytes) : "max";
    if (absl::Status s = WriteValue(d + "/memory.max", mem); !s.ok()) return s;
    // No swapping past the limit (absent when the kernel has no swap accounting).
    if (Exists(d + "/memory.swap.max")) (void)WriteValue(d + "/memory.swap.max", "0");
    return procs;
  }
  const std::string& cpu_dir = dirs[0];
  const std::string& mem_dir = dirs[1];
  if (absl::Status s = WriteValue(cpu_dir + "/cpu.cfs_period_us", absl::StrCat(limits.cpu_period_us)); !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteValue(cpu_dir + "/cpu.cfs_quota_us",
                                  limits.cpu_quota_us > 0 ? absl::StrCat(limits.cpu_quota_us) : "-1");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteValue(mem_dir + "/memory.limit_in_bytes",
                                  limits.memory_bytes > 0 ? absl::StrCat(limits.memory_bytes) : "-1");
      !s.ok()) {
    return s;
  }
  if (Exists(mem_dir + "/memory.memsw.limit_in_bytes") && limits.memory_bytes > 0) {
    (void)WriteValue(mem_dir + "/memory.memsw.limit_in_bytes", absl::StrCat(limits.memory_bytes));
  }
  return procs;
}

void JobCgroups::Remove(const std::string& job_id) {
  for (const std::string& d : Dirs(job_id)) ::rmdir(d.c_str());
}

absl::StatusOr<JobUser> LookupJobUser(const std::string& name) {
  struct passwd pw {};
  struct passwd* found = nullptr;
  std::vector<char> buf(16384);
  const int rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
  if (rc != 0 || found == nullptr) return absl::NotFoundError(absl::StrCat("no user named '", name, "'"));
  JobUser u;
  u.set = true;
  u.uid = pw.pw_uid;
  u.gid = pw.pw_gid;
  u.name = name;
  return u;
}

}  // namespace surplus::worker
