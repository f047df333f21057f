#include "gpu_worker/cuda/cuda_backend.h"

#include <cuda.h>
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gpu_worker/cuda/cuda_driver.h"
#include "gpu_worker/cuda/gpu_rules.h"
#include "gpu_worker/cuda/mps_daemon.h"
#include "gpu_worker/cuda/nvml_telemetry.h"
#include "gpu_worker/cuda/workloads.h"
#include "surplus/gpu_models.h"

namespace surplus::worker {
namespace {

constexpr int64_t kMiB = 1024 * 1024;

// A green context with its stream; destroyed when the last run using it ends.
struct GreenContext {
  const DriverApi* driver = nullptr;
  CUgreenCtx green = nullptr;
  CUcontext context = nullptr;
  CUstream stream = nullptr;
  int sm_count = 0;
  ~GreenContext() {
    if (stream != nullptr) driver->StreamDestroy(stream);
    if (green != nullptr) driver->GreenCtxDestroy(green);
  }
};

// The SM split of one GPU from which every green-context slice on it is cut (see
// PlanGreenSlice for the mapping of placements to SM groups).
struct GreenPool {
  CUdevice device = 0;
  std::vector<CUdevResource> groups;
  CUdevResource remaining{};
  SmSplit split;
};

struct Slice {
  SliceRequest request;
  std::string isolation;
  uint8_t mask = 0;
  std::string mig_uuid;
  std::shared_ptr<GreenContext> green;
  bool running = false;
};

// Restores the calling thread's current CUDA context on scope exit.
class ContextRestorer {
 public:
  explicit ContextRestorer(const DriverApi& d) : d_(d) {
    if (d_.CtxGetCurrent(&saved_) != CUDA_SUCCESS) saved_ = nullptr;
  }
  ~ContextRestorer() { d_.CtxSetCurrent(saved_); }

 private:
  const DriverApi& d_;
  CUcontext saved_ = nullptr;
};

std::string GetParam(const BuiltinRequest& r, const std::string& key) {
  auto it = r.params.find(key);
  return it == r.params.end() ? "" : it->second;
}

}  // namespace

struct CudaBackend::Impl {
  CudaBackendOptions options;
  std::unique_ptr<NvmlTelemetry> telemetry;
  std::vector<GpuTelemetry> discovered;  // static facts, by NVML index

  mutable std::mutex mu;
  // CUDA state, set up once by EnsureCuda().
  bool cuda_tried = false;
  absl::Status cuda_status;
  DriverApi driver;
  std::vector<int> cuda_ordinal;  // by NVML index; -1 when CUDA does not see the GPU
  std::vector<int> total_sms;     // by NVML index
  std::map<int, GreenPool> green_pools;
  std::map<int, std::unique_ptr<MpsDaemon>> mps;
  std::map<std::string, Slice> slices;
  std::map<std::string, std::vector<int64_t>> job_pids;

  absl::Status EnsureCudaLocked();
  absl::StatusOr<GreenPool*> GreenPoolLocked(int gpu);
  absl::StatusOr<std::shared_ptr<GreenContext>> CreateGreenLocked(int gpu,
                                                                  const SliceRequest& r,
                                                                  int memory_slots);
  absl::StatusOr<MpsDaemon*> MpsLocked(int gpu);
  absl::StatusOr<PreparedSlice> PrepareLocked(const SliceRequest& request);
  bool IsWorkerProcess(int64_t pid) const;
};

absl::Status CudaBackend::Impl::EnsureCudaLocked() {
  if (cuda_tried) return cuda_status;
  cuda_tried = true;
  cuda_ordinal.assign(discovered.size(), -1);
  total_sms.assign(discovered.size(), 0);
  int count = 0;
  cuda_status = CudaStatus(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  if (!cuda_status.ok()) return cuda_status;
  auto driver_or = DriverApi::Load();
  if (!driver_or.ok()) {
    cuda_status = driver_or.status();
    return cuda_status;
  }
  driver = *driver_or;
  ContextRestorer restore(driver);
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, ordinal) != cudaSuccess) continue;
    const std::string uuid =
        FormatGpuUuid(reinterpret_cast<const unsigned char*>(prop.uuid.bytes));
    bool ours = false;
    for (const GpuTelemetry& g : discovered) {
      if (g.uuid != uuid) continue;
      cuda_ordinal[g.index] = ordinal;
      total_sms[g.index] = prop.multiProcessorCount;
      ours = !g.mig_enabled;
    }
    // A context holds device memory: none on a MIG instance (CUDA lists those, not their
    // GPU, and they are tenants' slices) or on a device that is not one of the node's GPUs.
    if (options.init_cuda && ours) {
      // Creates the primary context now rather than on the first job.
      cudaSetDevice(ordinal);
      cudaFree(nullptr);
    }
  }
  return cuda_status;
}

absl::StatusOr<GreenPool*> CudaBackend::Impl::GreenPoolLocked(int gpu) {
  auto it = green_pools.find(gpu);
  if (it != green_pools.end()) return &it->second;
  if (!driver.HasGreenContexts()) {
    return absl::FailedPreconditionError(
        "the CUDA driver has no green contexts (needs CUDA 12.5 or newer)");
  }
  GreenPool pool;
  if (CUresult rc = driver.DeviceGet(&pool.device, cuda_ordinal[gpu]); rc != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("cuDeviceGet: ", driver.ErrorText(rc)));
  }
  CUdevResource all{};
  if (CUresult rc = driver.DeviceGetDevResource(pool.device, &all, CU_DEV_RESOURCE_TYPE_SM);
      rc != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("cuDeviceGetDevResource: ", driver.ErrorText(rc)));
  }
  // The finest split the architecture allows (8 SMs on Hopper) gives the most exact
  // slices; groups must also be a multiple of the co-scheduling alignment.
  unsigned int group = std::max(1u, all.sm.minSmPartitionSize);
  const unsigned int align = std::max(1u, all.sm.smCoscheduledAlignment);
  group = (group + align - 1) / align * align;
  unsigned int n = 0;
  if (CUresult rc = driver.DevSmResourceSplitByCount(nullptr, &n, &all, nullptr, 0, group);
      rc != CUDA_SUCCESS || n == 0) {
    return absl::InternalError(absl::StrCat("cuDevSmResourceSplitByCount(query, ", group,
                                            " SMs): ", driver.ErrorText(rc)));
  }
  pool.groups.resize(n);
  if (CUresult rc = driver.DevSmResourceSplitByCount(pool.groups.data(), &n, &all,
                                                     &pool.remaining, 0, group);
      rc != CUDA_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("cuDevSmResourceSplitByCount: ", driver.ErrorText(rc)));
  }
  pool.groups.resize(n);
  pool.split.groups = static_cast<int>(n);
  unsigned int smallest = pool.groups[0].sm.smCount;
  for (const CUdevResource& g : pool.groups) smallest = std::min(smallest, g.sm.smCount);
  pool.split.group_sms = static_cast<int>(smallest);
  pool.split.remaining_sms =
      pool.remaining.type == CU_DEV_RESOURCE_TYPE_SM ? static_cast<int>(pool.remaining.sm.smCount)
                                                     : 0;
  return &green_pools.emplace(gpu, std::move(pool)).first->second;
}

absl::StatusOr<std::shared_ptr<GreenContext>> CudaBackend::Impl::CreateGreenLocked(
    int gpu, const SliceRequest& r, int memory_slots) {
  auto pool_or = GreenPoolLocked(gpu);
  if (!pool_or.ok()) return pool_or.status();
  GreenPool& pool = **pool_or;
  auto plan = PlanGreenSlice(pool.split, r.slot_start, memory_slots, r.sm_count,
                             r.compute_units >= kComputeUnitsPerGpu);
  if (!plan.ok()) return plan.status();
  std::vector<CUdevResource> resources(pool.groups.begin() + plan->first_group,
                                       pool.groups.begin() + plan->first_group +
                                           plan->group_count);
  if (plan->include_remaining) resources.push_back(pool.remaining);
  CUdevResourceDesc desc = nullptr;
  if (CUresult rc = driver.DevResourceGenerateDesc(&desc, resources.data(),
                                                   static_cast<unsigned int>(resources.size()));
      rc != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("cuDevResourceGenerateDesc: ", driver.ErrorText(rc)));
  }
  auto green = std::make_shared<GreenContext>();
  green->driver = &driver;
  if (CUresult rc =
          driver.GreenCtxCreate(&green->green, desc, pool.device, CU_GREEN_CTX_DEFAULT_STREAM);
      rc != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("cuGreenCtxCreate: ", driver.ErrorText(rc)));
  }
  if (CUresult rc = driver.CtxFromGreenCtx(&green->context, green->green); rc != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("cuCtxFromGreenCtx: ", driver.ErrorText(rc)));
  }
  if (CUresult rc = driver.GreenCtxStreamCreate(&green->stream, green->green,
                                                CU_STREAM_NON_BLOCKING, 0);
      rc != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("cuGreenCtxStreamCreate: ", driver.ErrorText(rc)));
  }
  CUdevResource got{};
  green->sm_count = plan->sm_count;
  if (driver.GreenCtxGetDevResource(green->green, &got, CU_DEV_RESOURCE_TYPE_SM) ==
      CUDA_SUCCESS) {
    green->sm_count = static_cast<int>(got.sm.smCount);  // what the driver really gave
  }
  return green;
}

absl::StatusOr<MpsDaemon*> CudaBackend::Impl::MpsLocked(int gpu) {
  auto it = mps.find(gpu);
  if (it != mps.end()) return it->second.get();
  MpsDaemonOptions o;
  o.control_binary = options.mps_control_binary;
  o.gpu_uuid = discovered[gpu].uuid;
  o.pipe_dir = absl::StrCat(options.state_dir, "/mps/", gpu, "/pipe");
  o.log_dir = absl::StrCat(options.state_dir, "/mps/", gpu, "/log");
  auto daemon = MpsDaemon::Start(o);
  if (!daemon.ok()) return daemon.status();
  return mps.emplace(gpu, *std::move(daemon)).first->second.get();
}

absl::StatusOr<PreparedSlice> CudaBackend::Impl::PrepareLocked(const SliceRequest& request) {
  if (request.job_id.empty()) return absl::InvalidArgumentError("slice without job id");
  if (slices.count(request.job_id) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("job ", request.job_id, " already has a slice"));
  }
  if (request.gpu_indices.empty()) return absl::InvalidArgumentError("slice without GPU");
  std::set<int> distinct(request.gpu_indices.begin(), request.gpu_indices.end());
  if (distinct.size() != request.gpu_indices.size()) {
    return absl::InvalidArgumentError("a GPU is listed twice");
  }
  const std::vector<GpuTelemetry> now = telemetry->Latest();
  for (int g : request.gpu_indices) {
    if (g < 0 || g >= static_cast<int>(now.size())) {
      return absl::InvalidArgumentError(absl::StrCat("no GPU ", g, " on this node"));
    }
    if (!now[g].healthy) {
      return absl::FailedPreconditionError(
          absl::StrCat("GPU ", g, " is unhealthy: ", now[g].health_reason));
    }
  }
  const GpuTelemetry& first = now[request.gpu_indices[0]];
  const bool whole = request.compute_units >= kComputeUnitsPerGpu;
  if (!whole && request.gpu_indices.size() != 1) {
    return absl::InvalidArgumentError("a partial slice lives on exactly one GPU");
  }
  Slice slice;
  slice.request = request;
  uint8_t mask = kFullGpuMask;
  int memory_slots = kMemorySlotsPerGpu;
  if (!whole) {
    auto m = SliceMask(first.model, request);
    if (!m.ok()) return m.status();
    mask = *m;
    const SliceProfile* profile = FindGpuModel(first.model)->FindProfile(request.slice_profile);
    memory_slots = profile->memory_slots;
    if (slice.request.sm_count <= 0) slice.request.sm_count = profile->sm_count;
    if (slice.request.memory_mib <= 0) slice.request.memory_mib = profile->memory_mib;
  }
  slice.mask = mask;
  for (const auto& [job, other] : slices) {
    for (int g : request.gpu_indices) {
      const auto& og = other.request.gpu_indices;
      if (std::find(og.begin(), og.end(), g) != og.end() && (other.mask & mask) != 0) {
        return absl::FailedPreconditionError(
            absl::StrCat("slice overlaps the slice of job ", job, " on GPU ", g));
      }
    }
  }

  PreparedSlice prepared;
  if (first.mig_enabled) {
    // The GPU is partitioned by MIG: use a matching existing instance, never reconfigure.
    if (request.gpu_indices.size() != 1) {
      return absl::InvalidArgumentError("MIG slices live on one GPU");
    }
    if (!request.exec) {
      return absl::UnimplementedError(
          "built-in workloads on MIG GPUs are not supported; run them as exec jobs");
    }
    std::set<std::string> taken;
    for (const auto& [job, other] : slices) taken.insert(other.mig_uuid);
    for (const MigInstance& inst : first.mig_instances) {
      if (inst.profile != request.slice_profile || taken.count(inst.uuid) != 0) continue;
      // The assigned placement exactly: an instance whose placement NVML would not tell is
      // not offered (it may be another one of the same profile, elsewhere on the GPU).
      if (inst.slot_start != request.slot_start) continue;
      slice.mig_uuid = inst.uuid;
      break;
    }
    if (slice.mig_uuid.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "GPU ", first.index, " has no free MIG instance ", request.slice_profile,
          " at memory slot ", request.slot_start, "; the worker does not change MIG geometry"));
    }
    prepared.env["CUDA_VISIBLE_DEVICES"] = slice.mig_uuid;
    prepared.isolation = "mig";
  } else if (whole) {
    std::vector<std::string> uuids;
    for (int g : request.gpu_indices) uuids.push_back(now[g].uuid);
    prepared.env["CUDA_VISIBLE_DEVICES"] = absl::StrJoin(uuids, ",");
    prepared.isolation = "none";
  } else if (request.exec) {
    if (!options.enable_mps) {
      return absl::FailedPreconditionError(
          "exec jobs on a GPU slice need MPS, which is disabled on this worker");
    }
    auto daemon = MpsLocked(first.index);
    if (!daemon.ok()) return daemon.status();
    prepared.env = MpsClientEnv(first.uuid, (*daemon)->options().pipe_dir,
                                (*daemon)->options().log_dir, request.compute_units,
                                slice.request.memory_mib);
    prepared.isolation = "mps";
  } else {
    if (absl::Status s = EnsureCudaLocked(); !s.ok()) return s;
    if (cuda_ordinal[first.index] < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("CUDA does not see GPU ", first.index, " (CUDA_VISIBLE_DEVICES?)"));
    }
    ContextRestorer restore(driver);
    auto green = CreateGreenLocked(first.index, slice.request, memory_slots);
    if (!green.ok()) return green.status();
    slice.green = *std::move(green);
    prepared.isolation = "green-context";
  }
  slice.isolation = prepared.isolation;
  slices.emplace(request.job_id, std::move(slice));
  return prepared;
}

bool CudaBackend::Impl::IsWorkerProcess(int64_t pid) const {
  std::set<int64_t> roots = {static_cast<int64_t>(::getpid())};
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& [gpu, daemon] : mps) roots.insert(daemon->pid());
    for (const auto& [job, pids] : job_pids) roots.insert(pids.begin(), pids.end());
  }
  int64_t p = pid;
  for (int depth = 0; depth < 64 && p > 1; ++depth) {
    if (roots.count(p) != 0) return true;
    std::optional<int64_t> parent = ParentPid(p);
    if (!parent) return false;
    p = *parent;
  }
  return false;
}

// --- CudaBackend ---------------------------------------------------------------------

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CudaBackend::~CudaBackend() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->slices.clear();  // green contexts go before the daemons and NVML
  impl_->green_pools.clear();
  impl_->mps.clear();     // each daemon is told to quit
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const CudaBackendOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  NvmlTelemetryOptions t;
  t.library_path = options.nvml_library;
  t.sample_interval = options.sample_interval;
  auto telemetry = NvmlTelemetry::Create(t);
  if (!telemetry.ok()) return telemetry.status();
  impl->telemetry = *std::move(telemetry);
  impl->discovered = impl->telemetry->Discover();
  if (options.init_cuda) {
    std::lock_guard<std::mutex> lock(impl->mu);
    // A CUDA failure here is not fatal: telemetry and exec jobs work without it, and
    // built-in jobs report the error.
    impl->EnsureCudaLocked().IgnoreError();
  }
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

absl::StatusOr<std::vector<GpuTelemetry>> CudaBackend::Discover() {
  return impl_->telemetry->Discover();
}

absl::StatusOr<std::vector<GpuTelemetry>> CudaBackend::Sample() {
  return impl_->telemetry->Latest();
}

absl::StatusOr<PreparedSlice> CudaBackend::PrepareSlice(const SliceRequest& request) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->PrepareLocked(request);
}

void CudaBackend::ReleaseSlice(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->slices.erase(job_id);  // a run still using its green context keeps it alive
  impl_->job_pids.erase(job_id);
}

absl::StatusOr<BuiltinResult> CudaBackend::RunBuiltin(
    const BuiltinRequest& request, const std::atomic<bool>& stop,
    const std::function<void(const std::string&)>& log) {
  if (request.kind != "gemm" && request.kind != "allreduce") {
    return absl::InvalidArgumentError(absl::StrCat("unknown built-in workload '", request.kind,
                                                   "' (gemm, allreduce)"));
  }
  const std::string& job = request.slice.job_id;
  bool implicit = false;
  Slice slice;
  std::vector<int> ordinals;
  int total_sms = 0;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (absl::Status s = impl_->EnsureCudaLocked(); !s.ok()) return s;
    if (impl_->slices.count(job) == 0) {
      SliceRequest r = request.slice;
      r.exec = false;
      auto prepared = impl_->PrepareLocked(r);
      if (!prepared.ok()) return prepared.status();
      implicit = true;
    }
    Slice& s = impl_->slices.at(job);
    if (s.request.exec) {
      return absl::FailedPreconditionError("the slice was prepared for an exec job");
    }
    if (s.running) return absl::FailedPreconditionError("a built-in already runs in this slice");
    s.running = true;
    slice = s;
    for (int g : s.request.gpu_indices) {
      if (impl_->cuda_ordinal[g] < 0) {
        s.running = false;
        return absl::FailedPreconditionError(absl::StrCat("CUDA does not see GPU ", g));
      }
      ordinals.push_back(impl_->cuda_ordinal[g]);
      total_sms = impl_->total_sms[g];
    }
  }
  auto finish = [&]() {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->slices.find(job);
    if (it != impl_->slices.end()) it->second.running = false;
    if (implicit) impl_->slices.erase(job);
  };
  absl::StatusOr<BuiltinResult> result;
  if (request.kind == "gemm") {
    GemmOptions o;
    if (std::string size = GetParam(request, "size"); !size.empty() && !absl::SimpleAtoi(size, &o.size)) {
      finish();
      return absl::InvalidArgumentError(absl::StrCat("gemm size '", size, "' is not a number"));
    }
    if (request.duration_ms > 0) o.duration_ms = request.duration_ms;
    const int64_t need_mib = 3 * int64_t{o.size} * o.size * 2 / kMiB + 1;
    if (slice.request.memory_mib > 0 && need_mib > slice.request.memory_mib) {
      finish();
      return absl::InvalidArgumentError(absl::StrCat("gemm size ", o.size, " needs ", need_mib,
                                                     " MiB; the slice has ",
                                                     slice.request.memory_mib));
    }
    std::vector<ExecTarget> targets;
    for (int ordinal : ordinals) {
      ExecTarget t;
      t.cuda_device = ordinal;
      t.total_sms = total_sms;
      t.sm_count = total_sms;
      t.isolation = slice.isolation;
      if (slice.green) {
        t.context = slice.green->context;
        t.stream = slice.green->stream;
        t.sm_count = slice.green->sm_count;
      }
      targets.push_back(t);
    }
    result = RunGemm(impl_->driver, targets, o, stop, log);
  } else {
    if (slice.isolation != "none") {
      finish();
      return absl::InvalidArgumentError("allreduce runs on whole GPUs");
    }
    AllReduceOptions o;
    if (std::string bytes = GetParam(request, "bytes");
        !bytes.empty() && !absl::SimpleAtoi(bytes, &o.bytes)) {
      finish();
      return absl::InvalidArgumentError(absl::StrCat("allreduce bytes '", bytes, "' is not a number"));
    }
    if (request.duration_ms > 0) o.duration_ms = request.duration_ms;
    result = RunAllReduce(ordinals, o, stop, log);
  }
  finish();
  return result;
}

void CudaBackend::RegisterJobProcess(const std::string& job_id, int64_t pid) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->job_pids[job_id].push_back(pid);
}

bool CudaBackend::IsWorkerProcess(int64_t pid) const { return impl_->IsWorkerProcess(pid); }

std::vector<GpuProcess> CudaBackend::OwnerProcesses(const GpuTelemetry& gpu) const {
  return surplus::worker::OwnerProcesses(gpu.processes,
                                         [this](int64_t pid) { return IsWorkerProcess(pid); });
}

std::string CudaBackend::DeviceName(int index) const {
  return impl_->telemetry->DeviceName(index);
}

int CudaBackend::SliceSmCount(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->slices.find(job_id);
  if (it == impl_->slices.end() || !it->second.green) return 0;
  return it->second.green->sm_count;
}

uint64_t CudaBackend::SamplesTaken() const { return impl_->telemetry->samples_taken(); }

absl::StatusOr<std::unique_ptr<GpuBackend>> MakeCudaBackend(const CudaBackendOptions& options) {
  auto backend = CudaBackend::Create(options);
  if (!backend.ok()) return backend.status();
  return std::unique_ptr<GpuBackend>(*std::move(backend));
}

}  // namespace surplus::worker
