#include "gpu_worker/runner.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace surplus::worker {
namespace {

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

absl::Status ErrnoStatus(int err, std::string message) {
  absl::StatusCode code = absl::StatusCode::kFailedPrecondition;
  if (err == ENOENT || err == ENOTDIR) code = absl::StatusCode::kNotFound;
  if (err == EACCES || err == EPERM) code = absl::StatusCode::kPermissionDenied;
  return absl::Status(code, absl::StrCat(message, ": ", std::strerror(err)));
}

// What the child reports through the close-on-exec pipe when it cannot exec.
struct ChildFailure {
  int stage;  // kStage*
  int err;    // errno
};
constexpr int kStageSetpgid = 1;
constexpr int kStageChdir = 2;
constexpr int kStageDup = 3;
constexpr int kStageExec = 4;
constexpr int kStageCgroup = 5;
constexpr int kStageUser = 6;

const char* StageName(int stage) {
  switch (stage) {
    case kStageSetpgid:
      return "setpgid";
    case kStageChdir:
      return "chdir to work folder";
    case kStageDup:
      return "redirect output";
    case kStageExec:
      return "exec";
    case kStageCgroup:
      return "join its cgroup";
    case kStageUser:
      return "switch to its user";
  }
  return "start";
}

// The child side of fork: only async-signal-safe calls until exec.
struct ChildSetup {
  std::vector<const char*> cgroup_procs;
  bool as_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

[[noreturn]] void ChildExec(int err_fd, int stdin_fd, int log_fd, const char* work_dir,
                            const std::vector<const char*>& candidates, char* const* argv,
                            char* const* envp, const ChildSetup& setup) {
  auto fail = [err_fd](int stage, int err) {
    const ChildFailure f{stage, err};
    ssize_t ignored = ::write(err_fd, &f, sizeof f);
    (void)ignored;
    ::_exit(127);
  };
  // Default dispositions and an empty mask: the worker's handlers, ignored SIGPIPE and
  // blocked signals must not leak into the job.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  if (::setpgid(0, 0) != 0) fail(kStageSetpgid, errno);
  if (!setup.cgroup_procs.empty()) {
    // Our pid in decimal, without printf (not async-signal-safe).
    char digits[24];
    int n = 0;
    for (pid_t v = ::getpid(); v > 0 && n < static_cast<int>(sizeof digits); v /= 10) {
      digits[sizeof digits - 1 - n++] = static_cast<char>('0' + v % 10);
    }
    for (const char* procs : setup.cgroup_procs) {
      const int fd = ::open(procs, O_WRONLY | O_CLOEXEC);
      if (fd < 0) fail(kStageCgroup, errno);
      if (::write(fd, digits + sizeof digits - n, static_cast<size_t>(n)) != n) fail(kStageCgroup, errno);
      ::close(fd);
    }
  }
  if (::chdir(work_dir) != 0) fail(kStageChdir, errno);
  if (::dup2(stdin_fd, 0) < 0 || ::dup2(log_fd, 1) < 0 || ::dup2(log_fd, 2) < 0) {
    fail(kStageDup, errno);
  }
  if (setup.as_user &&
      (::setgroups(0, nullptr) != 0 || ::setgid(setup.gid) != 0 || ::setuid(setup.uid) != 0)) {
    fail(kStageUser, errno);
  }
#ifdef SYS_close_range
  // Mark every other inherited descriptor close-on-exec (the error pipe included, which
  // is how the parent learns exec succeeded). Older kernels: best effort, ignored.
  ::syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */);
#endif
  // Like execvp: try each PATH candidate; report EACCES over ENOENT if any was found.
  int err = ENOENT;
  for (const char* path : candidates) {
    ::execve(path, argv, envp);
    if (errno != ENOENT && errno != ENOTDIR) err = errno;
  }
  fail(kStageExec, err);
  ::_exit(127);  // not reached: fail() exits
}

absl::Status WriteNotice(const std::string& path, absl::string_view reason,
                         int64_t deadline_unix_ms, int64_t notice_ms) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  const std::string text = absl::StrCat("reason=", reason, "\ndeadline_unix_ms=",
                                        deadline_unix_ms, "\nnotice_ms=", notice_ms, "\n");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("create ", tmp));
  absl::string_view left = text;
  while (!left.empty()) {
    const ssize_t n = ::write(fd, left.data(), left.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(err, absl::StrCat("write ", tmp));
    }
    left.remove_prefix(static_cast<size_t>(n));
  }
  ::close(fd);
  // rename makes the notice appear whole: a job never reads half of it.
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("rename ", tmp));
  }
  return absl::OkStatus();
}

bool ValidEnvName(absl::string_view name) {
  return !name.empty() && name.find('=') == absl::string_view::npos &&
         name.find('\0') == absl::string_view::npos;
}

}  // namespace

absl::StatusOr<uint64_t> ProcessStartTicks(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/stat");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", path));
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return absl::NotFoundError(absl::StrCat("read ", path));
  // The command name (field 2) may hold spaces and parentheses: fields restart after
  // the last ')'. Field 3 is the state; starttime is field 22.
  const absl::string_view stat(buf, static_cast<size_t>(n));
  const size_t close = stat.rfind(')');
  if (close == absl::string_view::npos) return absl::InternalError("bad " + path);
  std::vector<absl::string_view> fields =
      absl::StrSplit(stat.substr(close + 1), ' ', absl::SkipEmpty());
  uint64_t ticks = 0;
  if (fields.size() < 20 || !absl::SimpleAtoi(fields[19], &ticks)) {
    return absl::InternalError("bad " + path);
  }
  if (fields[0] == "Z" || fields[0] == "X") {
    return absl::NotFoundError(absl::StrCat("process ", pid, " has exited"));
  }
  return ticks;
}

Runner::Runner(RunnerOptions options) : options_(std::move(options)) {
  monitor_ = std::thread([this] { MonitorLoop(); });
}

Runner::~Runner() {
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
  }
  monitor_.join();
}

absl::StatusOr<pid_t> Runner::Start(const ExecSpec& spec) {
  if (spec.job_id.empty()) return absl::InvalidArgumentError("job id is required");
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return absl::InvalidArgumentError(absl::StrCat("job ", spec.job_id, ": empty argv"));
  }
  if (spec.work_dir.empty() || spec.log_path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("job ", spec.job_id, ": work_dir and log_path are required"));
  }
  for (const auto& [name, value] : spec.env) {
    if (!ValidEnvName(name) || value.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("job ", spec.job_id, ": bad environment variable '", name, "'"));
    }
  }
  const std::string failed = absl::StrCat("job ", spec.job_id, " failed to start");

  absl::MutexLock lock(&mu_);
  if (jobs_.count(spec.job_id) > 0) {
    return absl::AlreadyExistsError(absl::StrCat("job ", spec.job_id, " is already running"));
  }

  std::error_code ec;
  std::filesystem::create_directories(spec.work_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat(failed, ": create ", spec.work_dir, ": ", ec.message()));
  }
  const std::string notice_path = spec.notice_path.empty()
                                      ? absl::StrCat(spec.work_dir, "/.surplus_preempt_notice")
                                      : spec.notice_path;
  ::unlink(notice_path.c_str());  // a notice from an earlier run is not for this one

  // Environment: base, then the job's variables, then the runner's own.
  std::map<std::string, std::string> env = {{"PATH", options_.base_path},
                                            {"HOME", spec.work_dir}};
  for (const auto& [name, value] : spec.env) env[name] = value;
  env[kJobIdEnv] = spec.job_id;
  env[kPreemptNoticeEnv] = notice_path;
  std::vector<std::string> env_strings;
  for (const auto& [name, value] : env) env_strings.push_back(absl::StrCat(name, "=", value));

  // Everything the child needs is built here: after fork it may only make
  // async-signal-safe calls.
  std::vector<std::string> candidates;
  if (spec.argv[0].find('/') != std::string::npos) {
    candidates.push_back(spec.argv[0]);
  } else {
    for (absl::string_view dir : absl::StrSplit(env["PATH"], ':')) {
      candidates.push_back(absl::StrCat(dir.empty() ? "." : dir, "/", spec.argv[0]));
    }
  }
  std::vector<const char*> candidate_ptrs;
  for (const std::string& c : candidates) candidate_ptrs.push_back(c.c_str());
  std::vector<char*> argv;
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  const int log_fd =
      ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (log_fd < 0) return ErrnoStatus(errno, absl::StrCat(failed, ": open log ", spec.log_path));
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    const int err = errno;
    ::close(log_fd);
    return ErrnoStatus(err, absl::StrCat(failed, ": open /dev/null"));
  }
  ChildSetup setup;
  for (const std::string& p : spec.cgroup_procs) setup.cgroup_procs.push_back(p.c_str());
  if (spec.as_user) {
    setup.as_user = true;
    setup.uid = static_cast<uid_t>(spec.uid);
    setup.gid = static_cast<gid_t>(spec.gid);
    // The job's folder and log are its own.
    if (::chown(spec.work_dir.c_str(), setup.uid, setup.gid) != 0 || ::fchown(log_fd, setup.uid, setup.gid) != 0) {
      const int err = errno;
      ::close(log_fd);
      ::close(null_fd);
      return ErrnoStatus(err, absl::StrCat(failed, ": hand its folder to uid ", spec.uid));
    }
  }
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(log_fd);
    ::close(null_fd);
    return ErrnoStatus(err, absl::StrCat(failed, ": pipe"));
  }

  // Block signals across fork so that no handler of the worker runs in the child
  // before it resets them.
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ChildExec(err_pipe[1], null_fd, log_fd, spec.work_dir.c_str(), candidate_ptrs, argv.data(),
              envp.data(), setup);
  }
  const int fork_err = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(err_pipe[1]);
  ::close(log_fd);
  ::close(null_fd);
  if (pid < 0) {
    ::close(err_pipe[0]);
    return ErrnoStatus(fork_err, absl::StrCat(failed, ": fork"));
  }
  // Also set the group here so that a Stop right after Start cannot miss it (the
  // child may not have run yet). EACCES means the child already exec'd: it set it.
  ::setpgid(pid, pid);

  // The pipe closes on a successful exec; otherwise the child wrote why it failed.
  ChildFailure failure{};
  ssize_t n;
  do {
    n = ::read(err_pipe[0], &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof failure)) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return ErrnoStatus(failure.err, absl::StrCat(failed, ": ", StageName(failure.stage), " '",
                                                 failure.stage == kStageChdir ? spec.work_dir
                                                 : failure.stage == kStageCgroup
                                                     ? (spec.cgroup_procs.empty() ? "" : spec.cgroup_procs[0])
                                                     : spec.argv[0],
                                                 "'"));
  }

  Job job;
  job.info.job_id = spec.job_id;
  job.info.pid = pid;
  job.info.notice_path = notice_path;
  absl::StatusOr<uint64_t> ticks = ProcessStartTicks(pid);
  job.info.start_ticks = ticks.ok() ? *ticks : 0;
  job.started_steady_ns = SteadyNowNs();
  jobs_.emplace(spec.job_id, std::move(job));
  return pid;
}

absl::Status Runner::Stop(absl::string_view job_id, absl::Duration notice,
                          absl::string_view reason) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no running job ", job_id));
  Job& job = it->second;
  if (notice < absl::ZeroDuration()) notice = absl::ZeroDuration();
  const int64_t deadline = SteadyNowNs() + absl::ToInt64Nanoseconds(notice);
  if (job.stop_requested) {
    if (deadline < job.kill_deadline_steady_ns) job.kill_deadline_steady_ns = deadline;
    return absl::OkStatus();
  }
  job.stop_requested = true;
  job.stop_reason = std::string(reason);
  job.kill_deadline_steady_ns = deadline;
  // The notice comes first so that a job handling SIGTERM can read it. A failure to
  // write it must not keep the job from being stopped.
  absl::Status notice_status =
      WriteNotice(job.info.notice_path, reason, absl::ToUnixMillis(absl::Now() + notice),
                  absl::ToInt64Milliseconds(notice));
  const pid_t pgid = job.info.pid;
  if (notice == absl::ZeroDuration()) {
    ::kill(-pgid, SIGKILL);
    job.killed = true;
    job.killed_at_deadline = true;
  } else {
    ::kill(-pgid, SIGTERM);
  }
  return notice_status;
}

absl::Status Runner::Adopt(absl::string_view job_id, pid_t pid, uint64_t start_ticks,
                           std::string notice_path) {
  if (job_id.empty() || pid <= 1) return absl::InvalidArgumentError("bad job id or pid");
  absl::StatusOr<uint64_t> ticks = ProcessStartTicks(pid);
  if (!ticks.ok()) return ticks.status();
  if (start_ticks != 0 && *ticks != start_ticks) {
    return absl::NotFoundError(
        absl::StrCat("pid ", pid, " is another process now (job ", job_id, " is gone)"));
  }
  absl::MutexLock lock(&mu_);
  if (jobs_.count(job_id) > 0) {
    return absl::AlreadyExistsError(absl::StrCat("job ", job_id, " is already tracked"));
  }
  Job job;
  job.info.job_id = std::string(job_id);
  job.info.pid = pid;
  job.info.start_ticks = *ticks;
  job.info.notice_path = std::move(notice_path);
  job.info.adopted = true;
  job.started_steady_ns = SteadyNowNs();
  jobs_.emplace(std::string(job_id), std::move(job));
  return absl::OkStatus();
}

void Runner::MonitorLoop() {
  absl::MutexLock lock(&mu_);
  while (!shutdown_) {
    PollLocked();
    mu_.AwaitWithTimeout(absl::Condition(&shutdown_), options_.poll_interval);
  }
}

void Runner::PollLocked() {
  const int64_t now = SteadyNowNs();
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    Job& job = it->second;
    const pid_t pid = job.info.pid;
    bool done = false;
    JobExit exit;
    if (job.info.adopted) {
      // Not our child: all we can see is whether the process is still there.
      absl::StatusOr<uint64_t> ticks = ProcessStartTicks(pid);
      if (!ticks.ok() || *ticks != job.info.start_ticks) {
        done = true;
        exit.kind = ExitKind::kVanished;
      }
    } else {
      // Peek without reaping: while the leader is a zombie its pid (the group id)
      // cannot be reused, so killing the rest of the group is safe.
      siginfo_t info{};
      if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid == pid) {
        if (options_.kill_group_on_exit) ::kill(-pid, SIGKILL);
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        done = true;
        if (WIFSIGNALED(status)) {
          exit.kind = ExitKind::kSignaled;
          exit.signal = WTERMSIG(status);
        } else {
          exit.kind = ExitKind::kExited;
          exit.exit_code = WEXITSTATUS(status);
        }
      }
    }
    if (!done) {
      if (job.stop_requested && !job.killed && now >= job.kill_deadline_steady_ns) {
        ::kill(-pid, SIGKILL);
        job.killed = true;
        job.killed_at_deadline = true;
      }
      ++it;
      continue;
    }
    exit.job_id = job.info.job_id;
    exit.pid = pid;
    exit.stop_requested = job.stop_requested;
    exit.killed_at_deadline = job.killed_at_deadline;
    exit.stop_reason = job.stop_reason;
    exit.runtime = absl::Nanoseconds(now - job.started_steady_ns);
    exits_.push_back(std::move(exit));
    it = jobs_.erase(it);
  }
}

std::vector<JobExit> Runner::TakeExits() {
  absl::MutexLock lock(&mu_);
  std::vector<JobExit> out;
  out.swap(exits_);
  return out;
}

std::optional<JobExit> Runner::WaitForExit(absl::string_view job_id, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto find = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto it = exits_.begin(); it != exits_.end(); ++it) {
      if (it->job_id == job_id) return it;
    }
    return exits_.end();
  };
  auto has_exit = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return find() != exits_.end(); };
  mu_.AwaitWithTimeout(absl::Condition(&has_exit), timeout);
  auto it = find();
  if (it == exits_.end()) return std::nullopt;
  JobExit out = std::move(*it);
  exits_.erase(it);
  return out;
}

bool Runner::IsRunning(absl::string_view job_id) const {
  absl::MutexLock lock(&mu_);
  return jobs_.count(job_id) > 0;
}

std::vector<RunningJob> Runner::RunningJobs() const {
  absl::MutexLock lock(&mu_);
  std::vector<RunningJob> out;
  for (const auto& [id, job] : jobs_) out.push_back(job.info);
  return out;
}

void Runner::KillAll() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, job] : jobs_) {
    ::kill(-job.info.pid, SIGKILL);
    job.killed = true;
  }
}

}  // namespace surplus::worker
