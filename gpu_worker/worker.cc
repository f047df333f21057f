#include "gpu_worker/worker.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gpu_worker/cgroups.h"
#include "gpu_worker/runner.h"
#include "gpu_worker/spool.h"
#include "surplus/host_resources.h"
#include "src/common/grpc_util.h"
#include "surplus/gpu_models.h"
#include "surplus/v1/billing.grpc.pb.h"
#include "surplus/v1/worker.grpc.pb.h"

namespace surplus::worker {
namespace v1 = surplus::v1;

// --- JobTable --------------------------------------------------------------------

AssignAction JobTable::OnAssignment(const std::string& job_id, int attempt) const {
  auto run = running_.find(job_id);
  if (run != running_.end()) {
    if (run->second == attempt) return AssignAction::kAlreadyRunning;
    return run->second < attempt ? AssignAction::kStopOlderAttempt : AssignAction::kStale;
  }
  if (finished_.count({job_id, attempt}) != 0) return AssignAction::kResendFinal;
  return AssignAction::kStart;
}

StopDecision JobTable::OnStop(const std::string& job_id, int attempt) const {
  StopDecision d;
  auto run = running_.find(job_id);
  if (run != running_.end()) {
    // A stop for the running attempt or for "whatever runs" stops it; so does a stop for
    // a newer attempt, as the older one that runs is then not wanted either.
    if (attempt < 0 || attempt >= run->second) {
      d.stop_running = true;
      d.running_attempt = run->second;
    }
    if (attempt == run->second || attempt < 0) return d;
  }
  if (attempt < 0) return d;
  if (finished_.count({job_id, attempt}) != 0) {
    d.resend_final = true;
  } else if (run == running_.end() || attempt > run->second) {
    d.report_never_started = true;
  }
  return d;
}

void JobTable::Started(const std::string& job_id, int attempt) { running_[job_id] = attempt; }

void JobTable::Finish(const v1::JobStatus& status) {
  auto run = running_.find(status.job_id());
  if (run != running_.end() && run->second == status.attempt()) running_.erase(run);
  Finished& f = finished_[{status.job_id(), status.attempt()}];
  f.status = status;
  f.confirmed = false;
}

void JobTable::Unconfirm(const std::string& job_id, int attempt) {
  auto it = finished_.find({job_id, attempt});
  if (it != finished_.end()) it->second.confirmed = false;
}

void JobTable::Confirm(const std::string& job_id, int attempt) {
  auto it = finished_.find({job_id, attempt});
  if (it != finished_.end()) it->second.confirmed = true;
}

std::optional<int> JobTable::RunningAttempt(const std::string& job_id) const {
  auto it = running_.find(job_id);
  if (it == running_.end()) return std::nullopt;
  return it->second;
}

const JobTable::Finished* JobTable::FindFinished(const std::string& job_id, int attempt) const {
  auto it = finished_.find({job_id, attempt});
  return it == finished_.end() ? nullptr : &it->second;
}

std::vector<v1::JobStatus> JobTable::Unconfirmed() const {
  std::vector<v1::JobStatus> out;
  for (const auto& [key, f] : finished_) {
    if (!f.confirmed) out.push_back(f.status);
  }
  std::sort(out.begin(), out.end(),
            [](const v1::JobStatus& a, const v1::JobStatus& b) { return a.at_ms() < b.at_ms(); });
  return out;
}

void JobTable::Prune(int64_t min_at_ms, size_t max_entries) {
  for (auto it = finished_.begin(); it != finished_.end();) {
    it = it->second.status.at_ms() < min_at_ms ? finished_.erase(it) : std::next(it);
  }
  if (finished_.size() <= max_entries) return;
  std::vector<std::pair<int64_t, Key>> by_age;
  for (const auto& [key, f] : finished_) by_age.emplace_back(f.status.at_ms(), key);
  std::sort(by_age.begin(), by_age.end());
  for (size_t i = 0; i + max_entries < by_age.size(); ++i) finished_.erase(by_age[i].second);
}

// One line per finished attempt: "<c|u> <base64 of the serialized JobStatus>".
std::string JobTable::SerializeFinished() const {
  std::string out;
  for (const auto& [key, f] : finished_) {
    absl::StrAppend(&out, f.confirmed ? "c " : "u ", absl::Base64Escape(f.status.SerializeAsString()),
                    "\n");
  }
  return out;
}

absl::Status JobTable::ParseFinished(absl::string_view text) {
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    ++line_no;
    std::string bytes;
    v1::JobStatus status;
    if (line.size() < 3 || (line[0] != 'c' && line[0] != 'u') || line[1] != ' ' ||
        !absl::Base64Unescape(line.substr(2), &bytes) || !status.ParseFromString(bytes) ||
        status.job_id().empty()) {
      return absl::DataLossError(absl::StrCat("finished jobs file: bad line ", line_no));
    }
    Finished& f = finished_[{status.job_id(), status.attempt()}];
    f.status = std::move(status);
    f.confirmed = line[0] == 'c';
  }
  return absl::OkStatus();
}

// --- UsageMeter ------------------------------------------------------------------

UsageRecord UsageMeter::Peek(int64_t now_steady_ms, const WallAnchor& anchor,
                             bool is_final) const {
  const int64_t end = std::max(now_steady_ms, cut_);
  UsageRecord r;
  r.start_ms = anchor.ToWall(cut_);
  r.end_ms = anchor.ToWall(end);
  r.gpu_ms = GpuMilliseconds(end - start_, compute_units_, gpus_) -
             GpuMilliseconds(cut_ - start_, compute_units_, gpus_);
  r.is_final = is_final;
  return r;
}

void UsageMeter::Commit(const UsageRecord& record, const WallAnchor& anchor) {
  cut_ = record.end_ms - anchor.wall_ms + anchor.steady_ms;
}

// --- LogCursor -------------------------------------------------------------------

std::optional<std::pair<int64_t, int64_t>> LogCursor::Next(int64_t file_size) {
  const int64_t limit = std::min(file_size, kMaxLogBytes);
  if (next_ >= limit || unacked_.size() >= kMaxUnacked) return std::nullopt;
  const int64_t len = std::min(limit - next_, kMaxChunkBytes);
  unacked_.emplace_back(next_, len);
  next_ += len;
  return unacked_.back();
}

void LogCursor::Ack() {
  if (!unacked_.empty()) unacked_.pop_front();
}

bool LogCursor::Drained(int64_t file_size) const {
  return unacked_.empty() && next_ >= std::min(file_size, kMaxLogBytes);
}

// --- Helpers ---------------------------------------------------------------------

std::string SafeFileName(absl::string_view name) {
  std::string out;
  for (char c : name) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '_' || c == '-' || c == '.') {
      out.push_back(c);
    } else {
      absl::StrAppend(&out, "%", absl::Hex(u, absl::kZeroPad2));
    }
  }
  if (out.empty() || out == "." || out == "..") out = absl::StrCat("%", out, "%");
  return out;
}

uint8_t PlacementMask(absl::string_view gpu_model, absl::string_view slice_profile,
                      int slot_start) {
  const GpuModel* model = FindGpuModel(gpu_model);
  const SliceProfile* p = model == nullptr ? nullptr : model->FindProfile(slice_profile);
  if (p == nullptr || p->IsWholeGpu() || slot_start < 0 ||
      slot_start + p->memory_slots > kMemorySlotsPerGpu) {
    return kFullGpuMask;
  }
  return p->MaskAt(slot_start);
}

v1::JobStatus ExecFinalStatus(const std::string& job_id, int attempt, bool signaled,
                              int code_or_signal, const std::string& stop_reason,
                              int64_t runtime_limit_s, int64_t at_ms) {
  v1::JobStatus s;
  s.set_job_id(job_id);
  s.set_attempt(attempt);
  s.set_at_ms(at_ms);
  // The shell's convention: death by signal N reads as exit code 128 + N.
  s.set_exit_code(signaled ? 128 + code_or_signal : code_or_signal);
  if (runtime_limit_s > 0) {
    s.set_phase(v1::JobStatus::PHASE_TIMED_OUT);
    s.set_message(absl::StrCat("exceeded its maximum runtime of ", runtime_limit_s, " s"));
  } else if (!stop_reason.empty()) {
    s.set_phase(v1::JobStatus::PHASE_STOPPED);
    s.set_message(absl::StrCat("stopped: ", stop_reason));
  } else {
    s.set_phase(v1::JobStatus::PHASE_EXITED);
    if (signaled) s.set_message(absl::StrCat("killed by signal ", code_or_signal));
  }
  return s;
}

namespace {

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Errno(const std::string& what, const std::string& path) {
  return absl::StrCat(what, " ", path, ": ", std::strerror(errno));
}

// Writes `content` to `path` atomically: temporary file, fsync, rename, fsync folder.
absl::Status WriteFileAtomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return absl::InternalError(Errno("cannot create", tmp));
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const absl::Status s = absl::InternalError(Errno("cannot write", tmp));
      ::close(fd);
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const absl::Status s = absl::InternalError(Errno("cannot fsync", tmp));
    ::close(fd);
    return s;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(Errno("cannot rename to", path));
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

std::optional<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Reads [offset, offset + len) of `path`; shorter when the file is.
std::string ReadRange(const std::string& path, int64_t offset, int64_t len) {
  std::string out;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  out.resize(static_cast<size_t>(len));
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + got, out.size() - got,
                              static_cast<off_t>(offset + static_cast<int64_t>(got)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

int64_t FileSize(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_size);
}

// Appends one line to a job's log (O_APPEND: whole small writes do not interleave).
void AppendLogLine(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return;
  const std::string data = line + "\n";
  ssize_t n;
  do {
    n = ::write(fd, data.data(), data.size());
  } while (n < 0 && errno == EINTR);
  ::close(fd);
}

// key=value lines with C-escaped values.
std::string EncodeFields(const std::map<std::string, std::string>& fields) {
  std::string out;
  for (const auto& [k, v] : fields) absl::StrAppend(&out, k, "=", absl::CEscape(v), "\n");
  return out;
}

std::map<std::string, std::string> DecodeFields(absl::string_view text) {
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) continue;
    std::string value;
    if (absl::CUnescape(line.substr(eq + 1), &value)) out[std::string(line.substr(0, eq))] = value;
  }
  return out;
}

constexpr int64_t kConfirmAfterMs = 10'000;
constexpr int64_t kFinishedKeepMs = 7LL * 24 * 3600 * 1000;
constexpr size_t kFinishedKeepMax = 20'000;
constexpr int64_t kOrphanStopNoticeMs = 10'000;
constexpr int64_t kBackoffMinMs = 100;
constexpr int64_t kBackoffMaxMs = 5000;
constexpr size_t kUsageBatch = 500;

}  // namespace

// --- Worker ----------------------------------------------------------------------

struct Worker::Impl {
  enum class Kind { kExec, kSleep, kBuiltin };

  struct BuiltinRun {
    std::atomic<bool> stop{false};
    std::atomic<bool> done{false};
    absl::StatusOr<BuiltinResult> result = absl::UnknownError("not run");
    std::thread thread;
  };

  struct ActiveJob {
    v1::Assignment assignment;
    std::string job_id;
    int attempt = 0;
    Kind kind = Kind::kExec;
    std::string key;  // file-safe "<job>-<attempt>"
    std::string log_path;
    std::string running_file;
    std::vector<int> gpu_indices;
    std::string slice_profile;
    uint8_t mask = kFullGpuMask;
    int compute_units = kComputeUnitsPerGpu;
    pid_t pid = 0;
    uint64_t start_ticks = 0;
    int64_t start_steady_ms = 0;
    // Wall time of the run = wall clock at its start + monotonic time since: a clock
    // step while it runs moves neither its intervals nor their lengths.
    WallAnchor anchor;
    UsageMeter meter{0, kComputeUnitsPerGpu, 1};
    bool started_reported = false;
    std::string stop_reason;  // non-empty once a Stop arrived
    int64_t runtime_deadline_steady_ms = 0;  // 0: no limit
    bool runtime_exceeded = false;
    int64_t sleep_end_steady_ms = 0;
    std::shared_ptr<BuiltinRun> builtin;
  };

  // A job's log being streamed; after the job ended, its final status waits here until
  // the log is fully sent, so a tenant following the log sees all of it.
  struct LogState {
    std::string job_id;
    int attempt = 0;
    std::string path;
    LogCursor cursor;
    bool ended = false;
    v1::JobStatus final_status;
  };

  struct Outgoing {
    v1::WorkerMessage msg;
    std::string log_key;  // non-empty: a log chunk of this LogState
    bool is_final = false;
  };

  WorkerOptions options;
  std::unique_ptr<GpuBackend> backend;
  BackendHooks hooks;
  std::unique_ptr<UsageSpool> spool;
  Runner runner;
  std::optional<JobCgroups> cgroups;  // per-job CPU and memory limits, when available
  JobUser job_user;
  int node_cpus = 1;
  int64_t node_memory_bytes = 0;
  // From Discover. Their MIG mode and instances are as last registered: the connection
  // thread updates them when telemetry shows that an operator changed the geometry.
  std::vector<GpuTelemetry> gpus;
  bool register_again = false;  // connection thread only: the registered geometry is stale
  std::string finished_path;
  std::string running_dir;
  std::string jobs_dir;

  std::mutex mu;
  std::condition_variable inbox_cv;   // supervisor wake-up
  std::condition_variable outbox_cv;  // stream writer wake-up
  std::condition_variable spool_cv;   // usage sender wake-up
  std::deque<v1::ControlMessage> inbox;
  std::deque<Outgoing> outbox;
  std::map<std::string, ActiveJob> jobs;    // by job id
  std::map<std::string, LogState> logs;     // by ActiveJob::key
  JobTable table;
  bool table_dirty = false;
  // Final statuses written on a stream: (job, attempt) -> (stream generation, steady ms).
  std::map<std::pair<std::string, int>, std::pair<uint64_t, int64_t>> final_sent;
  uint64_t stream_gen = 0;
  bool connected = false;
  bool read_done = false;
  bool billing_failing = false;  // the last ReportUsage failed
  bool draining = false;  // shutting down: no new jobs
  bool exiting = false;   // threads leave their loops
  grpc::ClientContext* stream_ctx = nullptr;
  grpc::ClientContext* billing_ctx = nullptr;

  explicit Impl(WorkerOptions o) : options(std::move(o)) {}

  // ---- state folder -------------------------------------------------------------

  absl::Status PersistTableLocked() {
    table.Prune(NowMs() - kFinishedKeepMs, kFinishedKeepMax);
    table_dirty = false;
    return WriteFileAtomic(finished_path, table.SerializeFinished());
  }

  void WriteRunningFile(const ActiveJob& j, int64_t last_end_ms) {
    std::map<std::string, std::string> f = {
        {"job_id", j.job_id},
        {"attempt", absl::StrCat(j.attempt)},
        {"pid", absl::StrCat(j.pid)},
        {"start_ticks", absl::StrCat(j.start_ticks)},
        {"tenant_id", j.assignment.tenant_id()},
        {"gpu_model", options.gpu_model},
        {"slice_profile", j.slice_profile},
        {"gpu_indices", absl::StrJoin(j.gpu_indices, ",")},
        {"last_end_ms", absl::StrCat(last_end_ms)},
    };
    if (absl::Status s = WriteFileAtomic(j.running_file, EncodeFields(f)); !s.ok()) {
      spdlog::warn("job {}: cannot record it in the state folder: {}", j.job_id, s.ToString());
    }
  }

  // Runs of an earlier incarnation: kill what is left and report them stopped.
  void RecoverLeftovers() {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(running_dir, ec)) {
      const std::string path = entry.path().string();
      if (absl::EndsWith(path, ".tmp")) {
        std::filesystem::remove(path, ec);
        continue;
      }
      auto text = ReadWholeFile(path);
      auto f = DecodeFields(text.value_or(""));
      int attempt = 0;
      int64_t pid = 0;
      uint64_t ticks = 0;
      int64_t last_end = 0;
      if (f["job_id"].empty() || !absl::SimpleAtoi(f["attempt"], &attempt)) {
        spdlog::warn("ignoring unreadable state file {}", path);
        std::filesystem::remove(path, ec);
        continue;
      }
      (void)absl::SimpleAtoi(f["pid"], &pid);
      (void)absl::SimpleAtoi(f["start_ticks"], &ticks);
      (void)absl::SimpleAtoi(f["last_end_ms"], &last_end);
      if (pid > 0) {
        auto now_ticks = ProcessStartTicks(static_cast<pid_t>(pid));
        if (now_ticks.ok() && (ticks == 0 || *now_ticks == ticks)) {
          ::kill(-static_cast<pid_t>(pid), SIGKILL);
          spdlog::warn("job {} attempt {}: killed process group {} left by an earlier worker",
                       f["job_id"], attempt, pid);
        }
      }
      v1::JobStatus s;
      s.set_job_id(f["job_id"]);
      s.set_attempt(attempt);
      s.set_phase(v1::JobStatus::PHASE_STOPPED);
      s.set_exit_code(-1);
      s.set_message("the worker restarted and stopped the job; its exit status is unknown");
      s.set_at_ms(NowMs());
      if (table.FindFinished(s.job_id(), attempt) == nullptr) table.Finish(s);
      table_dirty = true;
      // Close the run for billing: a final record of no length after the last interval.
      if (last_end > 0) {
        UsageRecord r;
        r.worker_id = options.node;
        r.job_id = f["job_id"];
        r.attempt = attempt;
        r.tenant_id = f["tenant_id"];
        r.gpu_model = f["gpu_model"];
        r.slice_profile = f["slice_profile"];
        r.gpu_indices = f["gpu_indices"];
        r.start_ms = last_end;
        r.end_ms = last_end;
        r.is_final = true;
        if (auto seq = spool->Append(r); !seq.ok()) {
          spdlog::error("cannot spool usage: {}", seq.status().ToString());
        }
      }
      std::filesystem::remove(path, ec);
    }
  }

  // ---- outbox --------------------------------------------------------------------

  void EnqueueLocked(v1::WorkerMessage msg, std::string log_key = "", bool is_final = false) {
    msg.set_node(options.node);
    outbox.push_back({std::move(msg), std::move(log_key), is_final});
    outbox_cv.notify_all();
  }

  void EnqueueStatusLocked(const v1::JobStatus& status) {
    v1::WorkerMessage m;
    *m.mutable_status() = status;
    EnqueueLocked(std::move(m), "", status.phase() != v1::JobStatus::PHASE_STARTED);
  }

  void EnqueueLogChunkLocked(const std::string& key, const LogState& ls, int64_t offset,
                             int64_t len) {
    v1::WorkerMessage m;
    v1::JobLogChunk* c = m.mutable_log();
    c->set_job_id(ls.job_id);
    c->set_attempt(ls.attempt);
    c->set_offset(offset);
    c->set_data(ReadRange(ls.path, offset, len));
    EnqueueLocked(std::move(m), key);
  }

  // A final status the control plane may not have: send it again, unless it still
  // waits for its log (then it goes out when the log is sent).
  void ResendFinalLocked(const std::string& job_id, int attempt) {
    const JobTable::Finished* f = table.FindFinished(job_id, attempt);
    if (f == nullptr) return;
    for (const auto& [key, ls] : logs) {
      if (ls.ended && ls.final_status.job_id() == job_id &&
          ls.final_status.attempt() == attempt) {
        return;
      }
    }
    table.Unconfirm(job_id, attempt);
    EnqueueStatusLocked(f->status);
  }

  // After a (re)connect: what the control plane may have missed, in a sensible order.
  void RebuildOutboxLocked() {
    outbox.clear();
    for (const auto& [id, j] : jobs) {
      if (!j.started_reported) continue;
      v1::JobStatus s;
      s.set_job_id(id);
      s.set_attempt(j.attempt);
      s.set_phase(v1::JobStatus::PHASE_STARTED);
      s.set_at_ms(j.anchor.ToWall(j.start_steady_ms));
      EnqueueStatusLocked(s);
    }
    for (const auto& [key, ls] : logs) {
      for (const auto& [offset, len] : ls.cursor.unacked()) {
        EnqueueLogChunkLocked(key, ls, offset, len);
      }
    }
    std::set<std::pair<std::string, int>> waiting;
    for (const auto& [key, ls] : logs) {
      if (ls.ended) waiting.insert({ls.final_status.job_id(), ls.final_status.attempt()});
    }
    for (const v1::JobStatus& s : table.Unconfirmed()) {
      if (waiting.count({s.job_id(), s.attempt()}) == 0) EnqueueStatusLocked(s);
    }
  }

  // Called by the stream writer after a successful write.
  void OnWrittenLocked(const Outgoing& item, uint64_t gen) {
    if (!item.log_key.empty()) {
      auto it = logs.find(item.log_key);
      if (it != logs.end()) it->second.cursor.Ack();
    }
    if (item.is_final) {
      final_sent[{item.msg.status().job_id(), item.msg.status().attempt()}] = {gen, SteadyMs()};
    }
  }

  // ---- telemetry -------------------------------------------------------------------

  // An operator may change a GPU's MIG mode or instances while the worker runs (the
  // worker itself never does). The scheduler must then offer the instances that exist: a
  // sample whose geometry differs from the registered one makes the worker register again.
  // An unhealthy GPU's sample is not trusted for it (a lost GPU answers no MIG query).
  void NoteMigGeometry(const std::vector<GpuTelemetry>& sample) {
    auto same = [](const MigInstance& a, const MigInstance& b) {
      return a.uuid == b.uuid && a.profile == b.profile && a.slot_start == b.slot_start;
    };
    for (const GpuTelemetry& now : sample) {
      if (!now.healthy || now.index < 0 || now.index >= static_cast<int>(gpus.size())) continue;
      GpuTelemetry& was = gpus[now.index];
      if (was.mig_enabled == now.mig_enabled &&
          std::equal(was.mig_instances.begin(), was.mig_instances.end(), now.mig_instances.begin(),
                     now.mig_instances.end(), same)) {
        continue;
      }
      std::vector<std::string> slices;
      for (const MigInstance& m : now.mig_instances) slices.push_back(absl::StrCat(m.profile, "@", m.slot_start));
      spdlog::info("GPU {}: MIG geometry changed to {}; registering it", now.index,
                   now.mig_enabled ? absl::StrCat("[", absl::StrJoin(slices, ", "), "]") : "MIG off");
      was.mig_enabled = now.mig_enabled;
      was.mig_instances = now.mig_instances;
      register_again = true;
    }
  }

  v1::WorkerMessage BuildTelemetry() {
    absl::StatusOr<std::vector<GpuTelemetry>> sample = backend->Sample();
    if (!sample.ok()) spdlog::warn("telemetry: {}", sample.status().ToString());
    if (sample.ok()) NoteMigGeometry(*sample);
    v1::WorkerMessage m;
    m.set_node(options.node);
    v1::Telemetry* t = m.mutable_telemetry();
    std::lock_guard<std::mutex> lock(mu);
    std::set<int64_t> job_pids;
    for (const auto& [id, j] : jobs) {
      if (j.pid > 0) job_pids.insert(j.pid);
    }
    if (sample.ok()) {
      for (const GpuTelemetry& g : *sample) {
        v1::GpuSample* s = t->add_gpus();
        s->set_index(g.index);
        s->set_utilization_pct(g.utilization_pct);
        s->set_memory_used_mib(g.memory_used_mib);
        s->set_memory_total_mib(g.memory_total_mib);
        s->set_temperature_c(g.temperature_c);
        s->set_power_mw(g.power_mw);
        s->set_healthy(g.healthy);
        s->set_health_reason(g.health_reason);
        int owner = 0;
        if (hooks.count_owner_processes) {
          owner = hooks.count_owner_processes(g);
        } else {
          for (const GpuProcess& p : g.processes) owner += job_pids.count(p.pid) == 0 ? 1 : 0;
        }
        s->set_owner_processes(owner);
        uint32_t mask = 0;
        int tenant_units = 0;
        for (const auto& [id, j] : jobs) {
          if (std::find(j.gpu_indices.begin(), j.gpu_indices.end(), g.index) ==
              j.gpu_indices.end()) {
            continue;
          }
          mask |= j.mask;
          tenant_units += j.compute_units;
        }
        s->set_tenant_slot_mask(mask);
        if (owner > 0 && g.utilization_pct >= 0) {
          // What the GPU does beyond the tenants' share is the owner's.
          const int tenant_pct = 100 * std::min(tenant_units, kComputeUnitsPerGpu) / kComputeUnitsPerGpu;
          s->set_owner_utilization_pct(std::max(0, g.utilization_pct - tenant_pct));
        }
      }
    }
    std::set<std::string> running;
    for (const auto& [id, j] : jobs) running.insert(id);
    for (const auto& [key, ls] : logs) {
      if (ls.ended) running.insert(ls.job_id);  // its end is not reported yet
    }
    for (const auto& id : running) t->add_running_job_ids(id);
    return m;
  }

  // ---- jobs (supervisor thread only) ------------------------------------------------

  // Ends an attempt that never ran (or could not start): final status, log line.
  void FinishWithoutRun(const std::string& job_id, int attempt, v1::JobStatus::Phase phase,
                        int exit_code, const std::string& message, const std::string& log_path) {
    v1::JobStatus s;
    s.set_job_id(job_id);
    s.set_attempt(attempt);
    s.set_phase(phase);
    s.set_exit_code(exit_code);
    s.set_message(message);
    s.set_at_ms(NowMs());
    spdlog::info("job {} attempt {}: {}", job_id, attempt, message);
    std::lock_guard<std::mutex> lock(mu);
    table.Finish(s);
    (void)PersistTableLocked();
    if (!log_path.empty()) {
      AppendLogLine(log_path, absl::StrCat("surplus-worker: ", message));
      LogState ls;
      ls.job_id = job_id;
      ls.attempt = attempt;
      ls.path = log_path;
      ls.ended = true;
      ls.final_status = s;
      logs[absl::StrCat(SafeFileName(job_id), "-", attempt)] = std::move(ls);
    } else {
      EnqueueStatusLocked(s);
    }
  }

  void StartJob(const v1::Assignment& a) {
    const std::string& job_id = a.job_id();
    const int attempt = a.attempt();
    const std::string key = absl::StrCat(SafeFileName(job_id), "-", attempt);
    const std::string work_dir = absl::StrCat(jobs_dir, "/", key);
    std::error_code ec;
    std::filesystem::create_directories(work_dir, ec);
    if (ec) {
      FinishWithoutRun(job_id, attempt, v1::JobStatus::PHASE_FAILED_TO_START, 0,
                       absl::StrCat("cannot create the job folder: ", ec.message()), "");
      return;
    }
    const std::string log_path = work_dir + "/job.log";
    auto fail = [&](const std::string& message) {
      FinishWithoutRun(job_id, attempt, v1::JobStatus::PHASE_FAILED_TO_START, 0, message, log_path);
    };

    const GpuModel* model = FindGpuModel(a.gpu_model().empty() ? options.gpu_model : a.gpu_model());
    if (model == nullptr) model = FindGpuModel(options.gpu_model);
    ActiveJob j;
    j.assignment = a;
    j.job_id = job_id;
    j.attempt = attempt;
    j.key = key;
    j.log_path = log_path;
    j.running_file = absl::StrCat(running_dir, "/", key);
    j.gpu_indices.assign(a.placement().gpu_indices().begin(), a.placement().gpu_indices().end());
    j.slice_profile = a.placement().slice_profile().empty() ? model->WholeGpu().name
                                                             : a.placement().slice_profile();
    const SliceProfile* profile = model->FindProfile(j.slice_profile);
    j.compute_units = a.compute_units() > 0
                          ? a.compute_units()
                          : (profile != nullptr ? profile->compute_units : kComputeUnitsPerGpu);
    j.mask = PlacementMask(model->name, j.slice_profile, a.placement().slot_start());
    if (j.gpu_indices.empty()) return fail("the assignment names no GPUs");

    const v1::Workload& w = a.spec().workload();
    std::string builtin_kind;
    if (w.has_exec()) {
      if (w.exec().argv().empty()) return fail("the exec workload has no argv");
      j.kind = Kind::kExec;
    } else if (w.has_builtin() && w.builtin().kind() == v1::BUILTIN_KIND_SLEEP) {
      j.kind = Kind::kSleep;
    } else if (w.has_builtin() && (w.builtin().kind() == v1::BUILTIN_KIND_GEMM ||
                                   w.builtin().kind() == v1::BUILTIN_KIND_ALLREDUCE)) {
      j.kind = Kind::kBuiltin;
      builtin_kind = w.builtin().kind() == v1::BUILTIN_KIND_GEMM ? "gemm" : "allreduce";
    } else {
      return fail("the job has no workload this worker knows");
    }

    SliceRequest req;
    req.job_id = job_id;
    req.gpu_indices = j.gpu_indices;
    req.slice_profile = j.slice_profile;
    req.slot_start = a.placement().slot_start();
    req.sm_count = a.sm_count() > 0 ? a.sm_count() : (profile != nullptr ? profile->sm_count : model->sm_count);
    req.compute_units = j.compute_units;
    req.memory_mib = a.memory_mib() > 0 ? a.memory_mib() : (profile != nullptr ? profile->memory_mib : model->memory_mib);
    req.exec = j.kind == Kind::kExec;
    absl::StatusOr<PreparedSlice> slice = backend->PrepareSlice(req);
    if (!slice.ok()) return fail(absl::StrCat("cannot prepare the slice: ", slice.status().message()));

    AppendLogLine(log_path, absl::StrCat("surplus-worker: attempt ", attempt, " on ", options.node,
                                         " GPUs ", absl::StrJoin(j.gpu_indices, ","), " (",
                                         j.slice_profile, ", isolation ", slice->isolation, ")"));
    const int64_t max_runtime_s = a.spec().max_runtime_seconds();
    if (j.kind == Kind::kExec) {
      ExecSpec spec;
      spec.job_id = job_id;
      spec.argv.assign(w.exec().argv().begin(), w.exec().argv().end());
      for (const auto& [k, v] : w.exec().env()) spec.env[k] = v;
      // The slice's variables win: a job cannot widen its own slice.
      for (const auto& [k, v] : slice->env) spec.env[k] = v;
      spec.work_dir = work_dir;
      spec.log_path = log_path;
      spec.notice_path = work_dir + "/preempt_notice";
      if (cgroups) {
        const int units = j.compute_units * static_cast<int>(j.gpu_indices.size());
        const int node_gpus = static_cast<int>(gpus.size());
        // Exactly what the scheduler charged the node for it.
        const CgroupLimits limits = WithRequests(
            ShareOfNode(units, node_gpus, node_cpus, node_memory_bytes, MemoryReserve()),
            HostCharge(a.spec().shape().cpu_millis(), options.host_cpu_millis, units, node_gpus),
            HostCharge(a.spec().shape().memory_mib(), options.host_memory_mib, units, node_gpus));
        absl::StatusOr<std::vector<std::string>> procs = cgroups->Create(job_id, limits);
        if (!procs.ok()) {
          backend->ReleaseSlice(job_id);
          return fail(absl::StrCat("cannot set up its cgroup: ", procs.status().message()));
        }
        spec.cgroup_procs = std::move(*procs);
        AppendLogLine(log_path, absl::StrFormat("surplus-worker: %s limits: %.2f CPUs, %d MiB memory",
                                                cgroups->ModeName(),
                                                static_cast<double>(limits.cpu_quota_us) / limits.cpu_period_us,
                                                limits.memory_bytes >> 20));
      }
      if (job_user.set) {
        spec.as_user = true;
        spec.uid = job_user.uid;
        spec.gid = job_user.gid;
      }
      absl::StatusOr<pid_t> pid = runner.Start(spec);
      if (!pid.ok()) {
        backend->ReleaseSlice(job_id);
        if (cgroups) cgroups->Remove(job_id);
        return fail(std::string(pid.status().message()));
      }
      j.pid = *pid;
      j.start_ticks = ProcessStartTicks(*pid).value_or(0);
      if (hooks.on_job_process) hooks.on_job_process(job_id, *pid);
    }
    j.start_steady_ms = SteadyMs();
    j.anchor = WallAnchor{NowMs(), j.start_steady_ms};
    j.meter = UsageMeter(j.start_steady_ms, j.compute_units, static_cast<int>(j.gpu_indices.size()));
    if (max_runtime_s > 0) j.runtime_deadline_steady_ms = j.start_steady_ms + max_runtime_s * 1000;
    if (j.kind == Kind::kSleep) {
      j.sleep_end_steady_ms = j.start_steady_ms + std::max<int64_t>(0, w.builtin().duration_ms());
      AppendLogLine(log_path, absl::StrCat("sleep: sleeping for ", w.builtin().duration_ms(), " ms"));
    } else if (j.kind == Kind::kBuiltin) {
      auto run = std::make_shared<BuiltinRun>();
      BuiltinRequest breq;
      breq.kind = builtin_kind;
      breq.duration_ms = w.builtin().duration_ms();
      for (const auto& [k, v] : w.builtin().params()) breq.params[k] = v;
      breq.slice = req;
      run->thread = std::thread([this, run, breq, log_path] {
        run->result = backend->RunBuiltin(breq, run->stop,
                                          [&log_path](const std::string& line) { AppendLogLine(log_path, line); });
        run->done = true;
        std::lock_guard<std::mutex> lock(mu);
        inbox_cv.notify_all();
      });
      j.builtin = run;
    }
    // Exec and sleep jobs run from here on; a built-in counts as started once the
    // backend did not refuse it at once (see Tick).
    j.started_reported = j.kind != Kind::kBuiltin;
    WriteRunningFile(j, j.anchor.wall_ms);
    spdlog::info("job {} attempt {}: started on GPUs {} ({})", job_id, attempt,
                 absl::StrJoin(j.gpu_indices, ","), j.slice_profile);
    std::lock_guard<std::mutex> lock(mu);
    table.Started(job_id, attempt);
    LogState ls;
    ls.job_id = job_id;
    ls.attempt = attempt;
    ls.path = log_path;
    logs[key] = std::move(ls);
    if (j.started_reported) EnqueueStatusLocked(StartedStatus(j));
    jobs[job_id] = std::move(j);
  }

  v1::JobStatus StartedStatus(const ActiveJob& j) const {
    v1::JobStatus s;
    s.set_job_id(j.job_id);
    s.set_attempt(j.attempt);
    s.set_phase(v1::JobStatus::PHASE_STARTED);
    s.set_at_ms(j.anchor.ToWall(j.start_steady_ms));
    return s;
  }

  // Appends the interval since the last cut to the spool (advancing the cut only when
  // it is durable, so a failed append leaves no gap).
  void CutUsage(ActiveJob& j, int64_t now_steady, bool is_final) {
    UsageRecord r = j.meter.Peek(now_steady, j.anchor, is_final);
    r.worker_id = options.node;
    r.job_id = j.job_id;
    r.attempt = j.attempt;
    r.tenant_id = j.assignment.tenant_id();
    r.gpu_model = options.gpu_model;
    r.slice_profile = j.slice_profile;
    r.gpu_indices = absl::StrJoin(j.gpu_indices, ",");
    absl::StatusOr<uint64_t> seq = spool->Append(r);
    if (!seq.ok()) {
      spdlog::error("job {}: cannot spool usage: {}", j.job_id, seq.status().ToString());
      return;
    }
    j.meter.Commit(r, j.anchor);
    if (!is_final) WriteRunningFile(j, r.end_ms);
    std::lock_guard<std::mutex> lock(mu);
    spool_cv.notify_all();
  }

  // The job ended with `status`: meter the rest, release the slice, hand the final status
  // to the log follower (it goes out once the log is sent).
  void EndJob(const std::string& job_id, v1::JobStatus status) {
    ActiveJob j;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = jobs.find(job_id);
      if (it == jobs.end()) return;
      j = std::move(it->second);
      jobs.erase(it);
    }
    const int64_t now = SteadyMs();
    if (j.builtin && j.builtin->thread.joinable()) j.builtin->thread.join();
    // A run that failed to start before its first interval is not billed.
    if (status.phase() != v1::JobStatus::PHASE_FAILED_TO_START || j.meter.cut_any()) {
      CutUsage(j, now, true);
    }
    backend->ReleaseSlice(job_id);
    if (cgroups) cgroups->Remove(job_id);
    status.set_at_ms(j.anchor.ToWall(now));
    AppendLogLine(j.log_path, absl::StrCat("surplus-worker: ", v1::JobStatus::Phase_Name(status.phase()),
                                           " exit code ", status.exit_code(),
                                           status.message().empty() ? "" : ": ", status.message()));
    spdlog::info("job {} attempt {}: {} exit code {} {}", job_id, j.attempt,
                 v1::JobStatus::Phase_Name(status.phase()), status.exit_code(), status.message());
    std::error_code ec;
    std::filesystem::remove(j.running_file, ec);
    std::lock_guard<std::mutex> lock(mu);
    table.Finish(status);
    if (absl::Status s = PersistTableLocked(); !s.ok()) {
      spdlog::error("cannot record finished jobs: {}", s.ToString());
    }
    auto ls = logs.find(j.key);
    if (ls == logs.end()) {
      EnqueueStatusLocked(status);
    } else {
      ls->second.ended = true;
      ls->second.final_status = status;
    }
  }

  void StopJob(const std::string& job_id, int64_t notice_ms, const std::string& reason) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = jobs.find(job_id);
    if (it == jobs.end()) return;
    ActiveJob& j = it->second;
    if (j.stop_reason.empty()) {
      j.stop_reason = reason.empty() ? "stop requested" : reason;
      AppendLogLine(j.log_path, absl::StrCat("surplus-worker: stopping (", j.stop_reason,
                                             "), notice ", notice_ms, " ms"));
      spdlog::info("job {} attempt {}: stopping ({}), notice {} ms", job_id, j.attempt,
                   j.stop_reason, notice_ms);
    }
    switch (j.kind) {
      case Kind::kExec:
        if (absl::Status s = runner.Stop(job_id, absl::Milliseconds(notice_ms), j.stop_reason);
            !s.ok() && !absl::IsNotFound(s)) {
          spdlog::warn("job {}: stop failed: {}", job_id, s.ToString());
        }
        break;
      case Kind::kSleep:
        j.sleep_end_steady_ms = 0;  // ends at the next tick
        break;
      case Kind::kBuiltin:
        j.builtin->stop = true;
        break;
    }
    inbox_cv.notify_all();
  }

  void HandleControl(const v1::ControlMessage& m) {
    if (m.has_assign()) {
      const v1::Assignment& a = m.assign();
      AssignAction action;
      {
        std::lock_guard<std::mutex> lock(mu);
        action = table.OnAssignment(a.job_id(), a.attempt());
        if (action == AssignAction::kResendFinal) ResendFinalLocked(a.job_id(), a.attempt());
        if (action == AssignAction::kStart && draining) return;
      }
      if (action == AssignAction::kStart) {
        StartJob(a);
      } else if (action == AssignAction::kStopOlderAttempt) {
        StopJob(a.job_id(), kOrphanStopNoticeMs,
                absl::StrCat("superseded by attempt ", a.attempt()));
      }
    } else if (m.has_stop()) {
      const v1::Stop& s = m.stop();
      StopDecision d;
      {
        std::lock_guard<std::mutex> lock(mu);
        d = table.OnStop(s.job_id(), s.attempt());
        if (d.resend_final) ResendFinalLocked(s.job_id(), s.attempt());
      }
      if (d.stop_running) StopJob(s.job_id(), s.notice_ms(), s.reason());
      if (d.report_never_started) {
        FinishWithoutRun(s.job_id(), s.attempt(), v1::JobStatus::PHASE_STOPPED, -1,
                         "stopped before it started", "");
      }
    }
  }

  // Periodic work of the supervisor: exits, timers, runtime limits, metering.
  void Tick() {
    const int64_t now = SteadyMs();
    for (const JobExit& e : runner.TakeExits()) {
      std::string stop_reason;
      int64_t limit_s = 0;
      int attempt = 0;
      {
        std::lock_guard<std::mutex> lock(mu);
        auto it = jobs.find(e.job_id);
        if (it == jobs.end()) continue;
        stop_reason = it->second.stop_reason;
        attempt = it->second.attempt;
        if (it->second.runtime_exceeded) limit_s = it->second.assignment.spec().max_runtime_seconds();
      }
      const bool signaled = e.kind == ExitKind::kSignaled;
      v1::JobStatus s = ExecFinalStatus(e.job_id, attempt, signaled,
                                        signaled ? e.signal : e.exit_code, stop_reason, limit_s, 0);
      if (e.kind == ExitKind::kVanished) {
        s.set_exit_code(-1);
        s.set_message("the job's process vanished; its exit status is unknown");
      }
      EndJob(e.job_id, s);
    }

    std::vector<std::pair<std::string, v1::JobStatus>> ended;
    std::vector<std::string> over_runtime;
    std::vector<std::string> to_meter;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (auto& [id, j] : jobs) {
        if (j.runtime_deadline_steady_ms > 0 && now >= j.runtime_deadline_steady_ms &&
            !j.runtime_exceeded) {
          over_runtime.push_back(id);
        }
        if (now - j.meter.cut_steady_ms() >= options.usage_interval_ms) to_meter.push_back(id);
        const int64_t limit_s = j.runtime_exceeded ? j.assignment.spec().max_runtime_seconds() : 0;
        if (j.kind == Kind::kSleep && (now >= j.sleep_end_steady_ms || !j.stop_reason.empty())) {
          v1::JobStatus s;
          if (limit_s > 0 || !j.stop_reason.empty()) {
            s = ExecFinalStatus(id, j.attempt, true, SIGTERM, j.stop_reason, limit_s, 0);
            AppendLogLine(j.log_path, "sleep: stopped");
          } else {
            s = ExecFinalStatus(id, j.attempt, false, 0, "", 0, 0);
            AppendLogLine(j.log_path, "sleep: done");
          }
          ended.emplace_back(id, s);
        } else if (j.kind == Kind::kBuiltin) {
          if (j.builtin->done) {
            v1::JobStatus s;
            const auto& result = j.builtin->result;
            if (!result.ok()) {
              s.set_job_id(id);
              s.set_attempt(j.attempt);
              s.set_phase(v1::JobStatus::PHASE_FAILED_TO_START);
              s.set_message(std::string(result.status().message()));
              AppendLogLine(j.log_path, absl::StrCat("surplus-worker: ", result.status().message()));
            } else {
              if (!result->summary.empty()) AppendLogLine(j.log_path, result->summary);
              s = ExecFinalStatus(id, j.attempt, false, result->exit_code, j.stop_reason, limit_s, 0);
            }
            ended.emplace_back(id, s);
          } else if (!j.started_reported && now - j.start_steady_ms >= 50) {
            j.started_reported = true;
            EnqueueStatusLocked(StartedStatus(j));
          }
        }
      }
    }
    for (const std::string& id : over_runtime) {
      int64_t limit_s = 0;
      {
        std::lock_guard<std::mutex> lock(mu);
        auto it = jobs.find(id);
        if (it == jobs.end()) continue;
        it->second.runtime_exceeded = true;
        limit_s = it->second.assignment.spec().max_runtime_seconds();
      }
      StopJob(id, 0, absl::StrCat("exceeded its maximum runtime of ", limit_s, " s"));
    }
    for (auto& [id, s] : ended) EndJob(id, s);
    for (const std::string& id : to_meter) {
      // Only the supervisor changes jobs, so the entry stays valid without the lock.
      ActiveJob* j = nullptr;
      {
        std::lock_guard<std::mutex> lock(mu);
        auto it = jobs.find(id);
        if (it != jobs.end()) j = &it->second;
      }
      if (j != nullptr) CutUsage(*j, now, false);
    }

    std::lock_guard<std::mutex> lock(mu);
    for (auto it = final_sent.begin(); it != final_sent.end();) {
      if (connected && it->second.first == stream_gen && now - it->second.second >= kConfirmAfterMs) {
        table.Confirm(it->first.first, it->first.second);
        table_dirty = true;
        it = final_sent.erase(it);
      } else if (it->second.first != stream_gen) {
        it = final_sent.erase(it);  // its stream died: stays unconfirmed, resent on connect
      } else {
        ++it;
      }
    }
    if (table_dirty) {
      if (absl::Status s = PersistTableLocked(); !s.ok()) {
        spdlog::error("cannot record finished jobs: {}", s.ToString());
      }
    }
  }

  void SupervisorLoop() {
    for (;;) {
      std::deque<v1::ControlMessage> msgs;
      {
        std::unique_lock<std::mutex> lock(mu);
        inbox_cv.wait_for(lock, std::chrono::milliseconds(50),
                          [&] { return exiting || !inbox.empty(); });
        if (exiting) return;
        msgs.swap(inbox);
      }
      for (const auto& m : msgs) HandleControl(m);
      Tick();
    }
  }

  // ---- logs ----------------------------------------------------------------------

  void FollowLogsOnce() {
    std::vector<std::pair<std::string, std::string>> files;  // key, path
    {
      std::lock_guard<std::mutex> lock(mu);
      for (const auto& [key, ls] : logs) files.emplace_back(key, ls.path);
    }
    for (const auto& [key, path] : files) {
      const int64_t size = FileSize(path);
      std::lock_guard<std::mutex> lock(mu);
      auto it = logs.find(key);
      if (it == logs.end()) continue;
      LogState& ls = it->second;
      while (auto chunk = ls.cursor.Next(size)) {
        EnqueueLogChunkLocked(key, ls, chunk->first, chunk->second);
      }
      if (ls.ended && ls.cursor.Drained(size)) {
        EnqueueStatusLocked(ls.final_status);
        logs.erase(it);
      }
    }
  }

  void LogLoop() {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu);
        inbox_cv.wait_for(lock, std::chrono::milliseconds(options.log_poll_ms), [&] { return exiting; });
        if (exiting) return;
      }
      FollowLogsOnce();
    }
  }

  // ---- control plane stream --------------------------------------------------------

  /// Host memory kept back from jobs for the system.
  int64_t MemoryReserve() const { return std::min<int64_t>(int64_t{2} << 30, node_memory_bytes / 10); }

  bool Register(v1::WorkerService::Stub& stub, bool quiet, int64_t* heartbeat_ms) {
    v1::RegisterRequest req;
    req.set_node(options.node);
    req.set_gpu_model(options.gpu_model);
    req.set_fabric(options.fabric);
    req.set_backend(backend->Name());
    // What jobs may use, as the scheduler counts it: the same totals ShareOfNode divides.
    req.set_cpu_millis(options.host_cpu_millis > 0 ? options.host_cpu_millis : int64_t{node_cpus} * 1000);
    req.set_memory_mib(options.host_memory_mib > 0 ? options.host_memory_mib
                                                   : std::max<int64_t>(0, node_memory_bytes - MemoryReserve()) >> 20);
    for (const GpuTelemetry& g : gpus) {
      v1::GpuDescription* d = req.add_gpus();
      d->set_index(g.index);
      d->set_uuid(g.uuid);
      d->set_memory_total_mib(g.memory_total_mib);
      d->set_mig_enabled(g.mig_enabled);
      for (const MigInstance& m : g.mig_instances) {
        // An instance whose placement NVML would not tell cannot be matched to one the
        // scheduler assigns: it is not offered.
        if (m.profile.empty() || m.slot_start < 0) {
          spdlog::warn("GPU {}: MIG instance {} ({}) has no known placement; not offered", g.index, m.uuid,
                       m.profile);
          continue;
        }
        v1::MigSlice* s = d->add_mig_slices();
        s->set_profile(m.profile);
        s->set_slot_start(m.slot_start);
        s->set_uuid(m.uuid);
      }
    }
    grpc::ClientContext ctx;
    AddBearer(&ctx, options.api_key);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::RegisterResponse resp;
    grpc::Status s = stub.Register(&ctx, req, &resp);
    if (!s.ok()) {
      spdlog::log(quiet ? spdlog::level::debug : spdlog::level::warn, "register with {}: {} ({})",
                  options.control_endpoint, s.error_message(), static_cast<int>(s.error_code()));
      return false;
    }
    *heartbeat_ms = resp.heartbeat_interval_ms();
    register_again = false;
    return true;
  }

  // Writes the outbox and telemetry until the stream breaks or the worker exits.
  void WriteLoop(grpc::ClientReaderWriter<v1::WorkerMessage, v1::ControlMessage>& stream,
                 v1::WorkerService::Stub& stub, uint64_t gen, int64_t telemetry_ms) {
    auto next_telemetry = std::chrono::steady_clock::now();
    for (;;) {
      std::optional<Outgoing> item;
      {
        std::unique_lock<std::mutex> lock(mu);
        outbox_cv.wait_until(lock, next_telemetry,
                             [&] { return exiting || read_done || !outbox.empty(); });
        if (exiting || read_done) return;
        if (!outbox.empty()) {
          item = std::move(outbox.front());
          outbox.pop_front();
        }
      }
      if (std::chrono::steady_clock::now() >= next_telemetry) {
        if (!stream.Write(BuildTelemetry())) return;
        next_telemetry = std::chrono::steady_clock::now() + std::chrono::milliseconds(telemetry_ms);
        // A new MIG geometry: registering it again (the stream stays open) makes the
        // scheduler rebuild the node; a failure is retried at the next sample.
        int64_t heartbeat_ms = 0;
        if (register_again && Register(stub, false, &heartbeat_ms)) spdlog::info("registered the new MIG geometry");
      }
      if (item) {
        if (!stream.Write(item->msg)) return;
        std::lock_guard<std::mutex> lock(mu);
        OnWrittenLocked(*item, gen);
      }
    }
  }

  void ConnectionLoop() {
    int64_t backoff = kBackoffMinMs;
    bool warned = false;
    std::unique_ptr<v1::WorkerService::Stub> stub;
    // After a failure the channel is made anew: a channel that saw its server go away
    // may keep failing calls fast with the old error for a while after it is back.
    auto sleep_backoff = [&] {
      stub.reset();
      std::unique_lock<std::mutex> lock(mu);
      outbox_cv.wait_for(lock, std::chrono::milliseconds(backoff), [&] { return exiting; });
      backoff = std::min(backoff * 2, kBackoffMaxMs);
    };
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (exiting) return;
      }
      if (!stub) stub = v1::WorkerService::NewStub(MakeChannel(options.control_endpoint, options.tls_ca_file));
      int64_t heartbeat_ms = 0;
      if (!Register(*stub, warned, &heartbeat_ms)) {
        if (!warned) spdlog::warn("control plane unreachable; jobs keep running, retrying");
        warned = true;
        sleep_backoff();
        continue;
      }
      const int64_t telemetry_ms = heartbeat_ms > 0 ? std::min(options.telemetry_ms, heartbeat_ms)
                                                    : options.telemetry_ms;
      grpc::ClientContext ctx;
      AddBearer(&ctx, options.api_key);
      auto stream = stub->Connect(&ctx);
      uint64_t gen = 0;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (exiting) {
          ctx.TryCancel();
          (void)stream->Finish();
          return;
        }
        gen = ++stream_gen;
        connected = true;
        read_done = false;
        stream_ctx = &ctx;
        RebuildOutboxLocked();
      }
      spdlog::info("connected to the control plane at {} (telemetry every {} ms)",
                   options.control_endpoint, telemetry_ms);
      warned = false;
      const auto connected_at = std::chrono::steady_clock::now();
      std::thread reader([this, &stream] {
        v1::ControlMessage m;
        while (stream->Read(&m)) {
          std::lock_guard<std::mutex> lock(mu);
          inbox.push_back(m);
          inbox_cv.notify_all();
        }
        std::lock_guard<std::mutex> lock(mu);
        read_done = true;
        outbox_cv.notify_all();
      });
      WriteLoop(*stream, *stub, gen, telemetry_ms);
      ctx.TryCancel();
      reader.join();
      grpc::Status status = stream->Finish();
      bool leaving = false;
      {
        std::lock_guard<std::mutex> lock(mu);
        connected = false;
        stream_ctx = nullptr;
        leaving = exiting;
      }
      if (leaving) return;
      spdlog::warn("control plane stream ended ({}); jobs keep running, reconnecting",
                   status.ok() ? "closed" : status.error_message());
      if (std::chrono::steady_clock::now() - connected_at > std::chrono::seconds(5)) {
        backoff = kBackoffMinMs;
      }
      sleep_backoff();
    }
  }

  // ---- billing -------------------------------------------------------------------

  void UsageLoop() {
    std::unique_ptr<v1::BillingService::Stub> stub;
    int64_t backoff = kBackoffMinMs;
    bool failing = false;
    auto last_compact = std::chrono::steady_clock::now();
    for (;;) {
      absl::StatusOr<std::vector<UsageRecord>> pending = spool->Pending(kUsageBatch);
      int64_t wait_ms = 1000;
      if (!pending.ok()) {
        spdlog::error("usage spool: {}", pending.status().ToString());
      } else if (!pending->empty()) {
        v1::ReportUsageRequest req;
        for (const UsageRecord& r : *pending) {
          v1::UsageRecord* p = req.add_records();
          p->set_worker_id(r.worker_id);
          p->set_seq(r.seq);
          p->set_job_id(r.job_id);
          p->set_attempt(r.attempt);
          p->set_tenant_id(r.tenant_id);
          p->set_gpu_model(r.gpu_model);
          p->set_slice_profile(r.slice_profile);
          for (absl::string_view idx : absl::StrSplit(r.gpu_indices, ',', absl::SkipEmpty())) {
            int i = 0;
            if (absl::SimpleAtoi(idx, &i)) p->add_gpu_indices(i);
          }
          p->set_start_ms(r.start_ms);
          p->set_end_ms(r.end_ms);
          p->set_gpu_ms(r.gpu_ms);
          p->set_final(r.is_final);
        }
        grpc::ClientContext ctx;
        AddBearer(&ctx, options.api_key);
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        {
          std::lock_guard<std::mutex> lock(mu);
          if (exiting) return;
          billing_ctx = &ctx;
        }
        v1::ReportUsageResponse resp;
        if (!stub) stub = v1::BillingService::NewStub(MakeChannel(options.billing_endpoint, options.tls_ca_file));
        grpc::Status s = stub->ReportUsage(&ctx, req, &resp);
        {
          std::lock_guard<std::mutex> lock(mu);
          billing_ctx = nullptr;
        }
        if (!s.ok()) {
          if (!failing) {
            spdlog::warn("billing at {} unavailable ({}); usage stays spooled, retrying",
                         options.billing_endpoint, s.error_message());
          }
          failing = true;
          {
            std::lock_guard<std::mutex> lock(mu);
            billing_failing = true;
          }
          stub.reset();  // a fresh channel for the next try (see ConnectionLoop)
          wait_ms = backoff;
          backoff = std::min(backoff * 2, kBackoffMaxMs);
        } else {
          if (failing) spdlog::info("billing reachable again");
          failing = false;
          {
            std::lock_guard<std::mutex> lock(mu);
            billing_failing = false;
          }
          backoff = kBackoffMinMs;
          std::set<uint64_t> acked(resp.acked_seqs().begin(), resp.acked_seqs().end());
          // Pending is in order and everything before it is acked already, so an acked
          // prefix of the batch can be acked in one durable step.
          uint64_t through = 0;
          size_t i = 0;
          for (; i < pending->size() && acked.count((*pending)[i].seq) != 0; ++i) {
            through = (*pending)[i].seq;
          }
          if (through > 0) {
            if (absl::Status a = spool->AckThrough(through); !a.ok()) {
              spdlog::error("usage spool ack: {}", a.ToString());
            }
          }
          for (; i < pending->size(); ++i) {
            if (acked.count((*pending)[i].seq) == 0) continue;
            if (absl::Status a = spool->Ack((*pending)[i].seq); !a.ok()) {
              spdlog::error("usage spool ack: {}", a.ToString());
            }
          }
          wait_ms = acked.empty() ? 1000 : 0;
        }
      }
      if (std::chrono::steady_clock::now() - last_compact > std::chrono::minutes(5)) {
        if (absl::Status c = spool->Compact(); !c.ok()) spdlog::warn("usage spool compact: {}", c.ToString());
        last_compact = std::chrono::steady_clock::now();
      }
      std::unique_lock<std::mutex> lock(mu);
      if (exiting) return;
      if (wait_ms > 0) {
        spool_cv.wait_for(lock, std::chrono::milliseconds(wait_ms));  // new records wake it early
      }
      if (exiting) return;
    }
  }
};

Worker::Worker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Worker::~Worker() = default;

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(WorkerOptions options,
                                                       std::unique_ptr<GpuBackend> backend,
                                                       BackendHooks hooks) {
  if (options.node.empty()) return absl::InvalidArgumentError("--node: required");
  const GpuModel* model = FindGpuModel(options.gpu_model);
  if (model == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--gpu-model: unknown GPU model '", options.gpu_model, "'"));
  }
  options.gpu_model = model->name;
  if (options.telemetry_ms < 50) return absl::InvalidArgumentError("--telemetry-ms: at least 50");
  if (options.usage_interval_ms < 100) {
    return absl::InvalidArgumentError("--usage-interval-ms: at least 100");
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  Impl& w = *impl;
  w.backend = std::move(backend);
  w.hooks = std::move(hooks);
  w.jobs_dir = w.options.state_dir + "/jobs";
  w.running_dir = w.options.state_dir + "/running";
  w.finished_path = w.options.state_dir + "/finished_jobs";
  std::error_code ec;
  for (const std::string& dir : {w.options.state_dir, w.jobs_dir, w.running_dir,
                                 w.options.state_dir + "/spool"}) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  auto gpus = w.backend->Discover();
  if (!gpus.ok()) return gpus.status();
  if (gpus->empty()) return absl::FailedPreconditionError("the backend found no GPUs");
  w.gpus = std::move(*gpus);
  w.node_cpus = static_cast<int>(std::max<long>(1, ::sysconf(_SC_NPROCESSORS_ONLN)));
  w.node_memory_bytes = static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGESIZE);
  if (w.options.job_cgroups != "off") {
    if (w.options.job_cgroups != "auto" && w.options.job_cgroups != "on") {
      return absl::InvalidArgumentError("--job-cgroups: auto, on or off");
    }
    std::string name;
    for (char c : "surplus-" + w.options.node) name.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_');
    auto cg = JobCgroups::Open(w.options.cgroup_fs_root, name);
    if (cg.ok()) {
      w.cgroups = std::move(*cg);
      spdlog::info("exec jobs run in their own cgroups ({}, under {}/{})", w.cgroups->ModeName(),
                   w.options.cgroup_fs_root, name);
    } else if (w.options.job_cgroups == "on") {
      return absl::FailedPreconditionError(absl::StrCat("--job-cgroups on: ", cg.status().message()));
    } else {
      spdlog::warn("exec jobs run without their own cgroups: {}", std::string(cg.status().message()));
    }
  }
  if (!w.options.job_user.empty()) {
    auto user = LookupJobUser(w.options.job_user);
    if (!user.ok()) return absl::InvalidArgumentError(absl::StrCat("--job-user: ", user.status().message()));
    if (::geteuid() != 0 && user->uid != ::geteuid()) {
      return absl::FailedPreconditionError("--job-user: the worker must run as root to run jobs as another user");
    }
    w.job_user = *user;
  }
  auto spool = UsageSpool::Open(w.options.state_dir + "/spool");
  if (!spool.ok()) return spool.status();
  w.spool = std::move(*spool);
  if (w.spool->recovery().truncated_bytes > 0) {
    spdlog::warn("usage spool: cut {} damaged bytes ({})", w.spool->recovery().truncated_bytes,
                 w.spool->recovery().truncation_reason);
  }
  if (auto text = ReadWholeFile(w.finished_path)) {
    if (absl::Status s = w.table.ParseFinished(*text); !s.ok()) {
      spdlog::warn("{}: {}; starting with what could be read", w.finished_path, s.ToString());
    }
  }
  w.RecoverLeftovers();
  if (w.table_dirty) {
    if (absl::Status s = w.PersistTableLocked(); !s.ok()) return s;
  }
  spdlog::info("worker {}: {} x {} ({} backend), state in {}, {} usage record(s) spooled",
               w.options.node, w.gpus.size(), w.options.gpu_model, w.backend->Name(),
               w.options.state_dir, w.spool->pending_count());
  return std::unique_ptr<Worker>(new Worker(std::move(impl)));
}

absl::Status Worker::Run(const std::atomic<bool>& stop) {
  Impl& w = *impl_;
  std::thread supervisor([&w] { w.SupervisorLoop(); });
  std::thread logs([&w] { w.LogLoop(); });
  std::thread usage([&w] { w.UsageLoop(); });
  std::thread connection([&w] { w.ConnectionLoop(); });
  while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));

  spdlog::info("shutting down: stopping jobs with {} ms notice", w.options.shutdown_notice_ms);
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> lock(w.mu);
    w.draining = true;
    for (const auto& [id, j] : w.jobs) ids.push_back(id);
  }
  // StopJob only records the stop and signals; the supervisor reaps and reports.
  for (const auto& id : ids) w.StopJob(id, w.options.shutdown_notice_ms, "the worker is shutting down");
  const auto jobs_deadline = std::chrono::steady_clock::now() +
                             std::chrono::milliseconds(w.options.shutdown_notice_ms + 3000);
  const auto deadline_for_flush = [&] {
    return std::chrono::steady_clock::now() + std::chrono::seconds(3);
  };
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(w.mu);
      if (w.jobs.empty()) break;
    }
    if (std::chrono::steady_clock::now() > jobs_deadline) {
      spdlog::warn("jobs still running at shutdown; killing them");
      w.runner.KillAll();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Give the log follower, the stream and the usage sender a moment to deliver the
  // final statuses and records (what is left goes out after the next start).
  const auto flush_deadline = deadline_for_flush();
  while (std::chrono::steady_clock::now() < flush_deadline) {
    {
      std::lock_guard<std::mutex> lock(w.mu);
      const bool control_done =
          !w.connected || (w.outbox.empty() && w.logs.empty() && w.jobs.empty());
      const bool usage_done = w.billing_failing || w.spool->pending_count() == 0;
      if (control_done && usage_done) break;
      if (!usage_done) w.spool_cv.notify_all();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  {
    std::lock_guard<std::mutex> lock(w.mu);
    w.exiting = true;
    if (w.stream_ctx != nullptr) w.stream_ctx->TryCancel();
    if (w.billing_ctx != nullptr) w.billing_ctx->TryCancel();
    w.inbox_cv.notify_all();
    w.outbox_cv.notify_all();
    w.spool_cv.notify_all();
  }
  connection.join();
  usage.join();
  logs.join();
  supervisor.join();
  // Built-in runs still going (their backend ignored the stop): wait for them, as their
  // threads use this worker.
  std::vector<std::shared_ptr<Impl::BuiltinRun>> builtins;
  {
    std::lock_guard<std::mutex> lock(w.mu);
    for (auto& [id, j] : w.jobs) {
      if (j.builtin) builtins.push_back(j.builtin);
    }
  }
  for (auto& b : builtins) {
    b->stop = true;
    if (b->thread.joinable()) b->thread.join();
  }
  {
    std::lock_guard<std::mutex> lock(w.mu);
    if (w.table_dirty) (void)w.PersistTableLocked();
  }
  spdlog::info("worker stopped; {} usage record(s) left in the spool", w.spool->pending_count());
  return absl::OkStatus();
}

}  // namespace surplus::worker
