// Runner with real processes (/bin/sh). Each test finishes in well under a second.

#include "gpu_worker/runner.h"

#include <pwd.h>

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "gpu_worker/cgroups.h"

namespace surplus::worker {
namespace {

using std::chrono_literals::operator""ms;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WaitForFile(const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::filesystem::exists(path)) return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

bool ProcessGone(pid_t pid) { return !ProcessStartTicks(pid).ok(); }

class RunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "runner_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    RunnerOptions options;
    options.poll_interval = absl::Milliseconds(10);
    runner_ = std::make_unique<Runner>(options);
  }
  void TearDown() override {
    runner_->KillAll();
    for (const RunningJob& j : runner_->RunningJobs()) {
      runner_->WaitForExit(j.job_id, absl::Seconds(2));
    }
    runner_.reset();
    std::filesystem::remove_all(root_);
  }

  ExecSpec Shell(const std::string& job_id, const std::string& script) {
    ExecSpec spec;
    spec.job_id = job_id;
    spec.argv = {"/bin/sh", "-c", script};
    spec.work_dir = root_ + "/" + job_id;
    spec.log_path = root_ + "/" + job_id + ".log";
    return spec;
  }

  std::string root_;
  std::unique_ptr<Runner> runner_;
};

TEST_F(RunnerTest, ReportsExitCodesAndSignals) {
  struct Case {
    const char* script;
    ExitKind kind;
    int code;
    int signal;
  };
  const Case cases[] = {
      {"exit 0", ExitKind::kExited, 0, 0},
      {"exit 3", ExitKind::kExited, 3, 0},
      // 127 from the job itself is an ordinary exit, not a failure to start.
      {"exit 127", ExitKind::kExited, 127, 0},
      {"kill -USR1 $$", ExitKind::kSignaled, -1, SIGUSR1},
  };
  int n = 0;
  for (const Case& c : cases) {
    const std::string id = "job" + std::to_string(n++);
    ASSERT_TRUE(runner_->Start(Shell(id, c.script)).ok()) << c.script;
    std::optional<JobExit> exit = runner_->WaitForExit(id, absl::Seconds(5));
    ASSERT_TRUE(exit.has_value()) << c.script;
    EXPECT_EQ(exit->kind, c.kind) << c.script;
    EXPECT_EQ(exit->exit_code, c.code) << c.script;
    EXPECT_EQ(exit->signal, c.signal) << c.script;
    EXPECT_FALSE(exit->stop_requested);
    EXPECT_FALSE(runner_->IsRunning(id));
  }
}

TEST_F(RunnerTest, CapturesOutputWithCleanEnvironmentInOwnFolder) {
  ::setenv("SURPLUS_TEST_SECRET", "leaked", 1);
  ExecSpec spec = Shell("env", "echo out; echo err >&2; pwd; echo \"$FOO|$HOME|$SURPLUS_JOB_ID|"
                               "${SURPLUS_TEST_SECRET-unset}\"; test -n \"$PATH\" && echo path");
  spec.env = {{"FOO", "bar baz"}, {"SURPLUS_JOB_ID", "spoofed"}};
  ASSERT_TRUE(runner_->Start(spec).ok());
  std::optional<JobExit> exit = runner_->WaitForExit("env", absl::Seconds(5));
  ::unsetenv("SURPLUS_TEST_SECRET");
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->exit_code, 0);
  const std::string canonical = std::filesystem::canonical(spec.work_dir).string();
  EXPECT_EQ(ReadFile(spec.log_path), "out\nerr\n" + canonical + "\nbar baz|" + spec.work_dir +
                                          "|env|unset\npath\n");
  // The log is appended to, not replaced, by a second run of the same job.
  ASSERT_TRUE(runner_->Start(Shell("env", "echo again")).ok());
  ASSERT_TRUE(runner_->WaitForExit("env", absl::Seconds(5)).has_value());
  EXPECT_NE(ReadFile(spec.log_path).find("path\nagain\n"), std::string::npos);
}

TEST_F(RunnerTest, StopWritesNoticeThenTerm) {
  // The job traps TERM and copies the notice file into a marker: the notice must be in
  // place when TERM arrives, and the job exits on its own before the deadline.
  ExecSpec spec = Shell("graceful",
                        "trap 'cat \"$SURPLUS_PREEMPT_NOTICE_FILE\" > term_marker; exit 0' TERM; "
                        "echo > ready; while :; do sleep 0.05; done");
  ASSERT_TRUE(runner_->Start(spec).ok());
  ASSERT_TRUE(WaitForFile(spec.work_dir + "/ready", 3000ms));
  ASSERT_TRUE(runner_->Stop("graceful", absl::Seconds(5), "price above bid").ok());
  std::optional<JobExit> exit = runner_->WaitForExit("graceful", absl::Seconds(4));
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->kind, ExitKind::kExited);
  EXPECT_EQ(exit->exit_code, 0);
  EXPECT_TRUE(exit->stop_requested);
  EXPECT_FALSE(exit->killed_at_deadline);
  EXPECT_EQ(exit->stop_reason, "price above bid");
  const std::string marker = ReadFile(spec.work_dir + "/term_marker");
  EXPECT_NE(marker.find("reason=price above bid\n"), std::string::npos) << marker;
  EXPECT_NE(marker.find("deadline_unix_ms="), std::string::npos) << marker;
  EXPECT_NE(marker.find("notice_ms=5000\n"), std::string::npos) << marker;
}

TEST_F(RunnerTest, KillsAtDeadlineWhenTermIsIgnored) {
  ExecSpec spec = Shell("stubborn", "trap '' TERM; echo > ready; while :; do sleep 0.05; done");
  ASSERT_TRUE(runner_->Start(spec).ok());
  ASSERT_TRUE(WaitForFile(spec.work_dir + "/ready", 3000ms));
  const auto stopped_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(runner_->Stop("stubborn", absl::Milliseconds(300), "owner reclaim").ok());
  // Still running while the notice lasts.
  std::this_thread::sleep_for(150ms);
  EXPECT_TRUE(runner_->IsRunning("stubborn"));
  std::optional<JobExit> exit = runner_->WaitForExit("stubborn", absl::Seconds(3));
  ASSERT_TRUE(exit.has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - stopped_at, 300ms);
  EXPECT_EQ(exit->kind, ExitKind::kSignaled);
  EXPECT_EQ(exit->signal, SIGKILL);
  EXPECT_TRUE(exit->killed_at_deadline);
  EXPECT_TRUE(std::filesystem::exists(spec.work_dir + "/.surplus_preempt_notice"));
}

TEST_F(RunnerTest, StopReachesGrandchildren) {
  ExecSpec spec = Shell("tree", "sleep 30 & echo $! > gc.pid; wait");
  ASSERT_TRUE(runner_->Start(spec).ok());
  ASSERT_TRUE(WaitForFile(spec.work_dir + "/gc.pid", 3000ms));
  std::this_thread::sleep_for(20ms);  // let the shell finish writing the pid
  const pid_t grandchild = std::stoi(ReadFile(spec.work_dir + "/gc.pid"));
  ASSERT_FALSE(ProcessGone(grandchild));
  ASSERT_TRUE(runner_->Stop("tree", absl::Seconds(2), "cancelled").ok());
  std::optional<JobExit> exit = runner_->WaitForExit("tree", absl::Seconds(3));
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->kind, ExitKind::kSignaled);
  EXPECT_EQ(exit->signal, SIGTERM);
  for (int i = 0; i < 100 && !ProcessGone(grandchild); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(ProcessGone(grandchild));
}

TEST_F(RunnerTest, KillsStragglersWhenMainProcessExits) {
  ExecSpec spec = Shell("leaver", "sleep 30 & echo $! > gc.pid; exit 0");
  ASSERT_TRUE(runner_->Start(spec).ok());
  std::optional<JobExit> exit = runner_->WaitForExit("leaver", absl::Seconds(3));
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->exit_code, 0);
  const pid_t grandchild = std::stoi(ReadFile(spec.work_dir + "/gc.pid"));
  for (int i = 0; i < 100 && !ProcessGone(grandchild); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(ProcessGone(grandchild));
}

TEST_F(RunnerTest, FailedToStartIsDistinct) {
  const std::string not_executable = root_ + "/data.txt";
  std::ofstream(not_executable) << "just data\n";
  struct Case {
    std::string argv0;
    absl::StatusCode code;
  };
  const Case cases[] = {
      {"/nonexistent/bin/tool", absl::StatusCode::kNotFound},
      {"surplus-no-such-binary", absl::StatusCode::kNotFound},  // PATH search
      {not_executable, absl::StatusCode::kPermissionDenied},
  };
  for (const Case& c : cases) {
    ExecSpec spec = Shell("bad", "");
    spec.argv = {c.argv0};
    absl::StatusOr<pid_t> pid = runner_->Start(spec);
    ASSERT_FALSE(pid.ok()) << c.argv0;
    EXPECT_EQ(pid.status().code(), c.code) << pid.status();
    EXPECT_NE(pid.status().message().find("failed to start"), std::string::npos);
    EXPECT_FALSE(runner_->IsRunning("bad"));
  }
  EXPECT_TRUE(runner_->TakeExits().empty());  // no exit is reported for a job that never ran
}

TEST_F(RunnerTest, RejectsDuplicatesAndUnknownJobs) {
  ASSERT_TRUE(runner_->Start(Shell("dup", "sleep 5")).ok());
  EXPECT_EQ(runner_->Start(Shell("dup", "true")).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(runner_->Stop("nope", absl::Seconds(1), "x").code(), absl::StatusCode::kNotFound);
  ExecSpec bad = Shell("badenv", "true");
  bad.env = {{"A=B", "c"}};
  EXPECT_EQ(runner_->Start(bad).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(runner_->Stop("dup", absl::ZeroDuration(), "cancelled").ok());
  std::optional<JobExit> exit = runner_->WaitForExit("dup", absl::Seconds(3));
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->signal, SIGKILL);
}

TEST_F(RunnerTest, AdoptsARunningProcess) {
  // A job started by "another incarnation" (here: the fixture's runner) is adopted by a
  // fresh runner, which can stop it and sees it vanish.
  ASSERT_TRUE(runner_->Start(Shell("old", "sleep 30")).ok());
  const std::vector<RunningJob> running = runner_->RunningJobs();
  ASSERT_EQ(running.size(), 1u);
  const RunningJob& old = running[0];
  ASSERT_NE(old.start_ticks, 0u);

  RunnerOptions options;
  options.poll_interval = absl::Milliseconds(10);
  Runner fresh(options);
  EXPECT_EQ(fresh.Adopt("old", old.pid, old.start_ticks + 1, old.notice_path).code(),
            absl::StatusCode::kNotFound);  // a reused pid is refused
  ASSERT_TRUE(fresh.Adopt("old", old.pid, old.start_ticks, old.notice_path).ok());
  EXPECT_TRUE(fresh.IsRunning("old"));
  ASSERT_TRUE(fresh.Stop("old", absl::Seconds(2), "drain").ok());
  std::optional<JobExit> exit = fresh.WaitForExit("old", absl::Seconds(3));
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->kind, ExitKind::kVanished);
  EXPECT_TRUE(exit->stop_requested);
  // The real parent still reaps it and knows how it ended.
  std::optional<JobExit> parent_view = runner_->WaitForExit("old", absl::Seconds(3));
  ASSERT_TRUE(parent_view.has_value());
  EXPECT_EQ(parent_view->signal, SIGTERM);
}

void Touch(const std::string& path, const std::string& text = "") {
  std::ofstream out(path);
  out << text;
}

TEST(ShareOfNode, GpuShareOfCpusAndMemory) {
  // A 1g slice (1 of 56 compute units on 8 GPUs) on 16 CPUs and 64 GiB, 8 GiB reserved.
  const CgroupLimits l = ShareOfNode(1, 8, 16, int64_t{64} << 30, int64_t{8} << 30);
  EXPECT_EQ(l.cpu_period_us, 100'000);
  EXPECT_EQ(l.cpu_quota_us, 100'000 * 16 / 56);
  EXPECT_EQ(l.memory_bytes, (int64_t{56} << 30) / 56);
  // A whole node gets everything but the reserve; a tiny share gets the floors.
  const CgroupLimits all = ShareOfNode(56, 8, 16, int64_t{64} << 30, int64_t{8} << 30);
  EXPECT_EQ(all.cpu_quota_us, 1'600'000);
  EXPECT_EQ(all.memory_bytes, int64_t{56} << 30);
  const CgroupLimits tiny = ShareOfNode(1, 64, 2, int64_t{1} << 30, 0);
  EXPECT_EQ(tiny.cpu_quota_us, 10'000);
  EXPECT_EQ(tiny.memory_bytes, int64_t{256} << 20);
}

TEST(ShareOfNode, RequestsReplaceTheShare) {
  const CgroupLimits share = ShareOfNode(7, 8, 16, int64_t{64} << 30, int64_t{8} << 30);
  // 2.5 CPUs and 12 GiB asked: exactly that, whatever the GPU share would give.
  const CgroupLimits asked = WithRequests(share, 2'500, 12 * 1024);
  EXPECT_EQ(asked.cpu_quota_us, 250'000);
  EXPECT_EQ(asked.memory_bytes, int64_t{12} << 30);
  // Only memory asked: the CPU share stays.
  const CgroupLimits mem_only = WithRequests(share, 0, 1024);
  EXPECT_EQ(mem_only.cpu_quota_us, share.cpu_quota_us);
  EXPECT_EQ(mem_only.memory_bytes, int64_t{1} << 30);
  EXPECT_EQ(WithRequests(share, 0, 0).memory_bytes, share.memory_bytes);
}

class CgroupLayoutTest : public RunnerTest {};

TEST_F(CgroupLayoutTest, V2WritesLimitsAndEnablesControllers) {
  const std::string fs = root_ + "/v2";
  std::filesystem::create_directories(fs);
  Touch(fs + "/cgroup.controllers", "cpuset cpu io memory pids\n");
  Touch(fs + "/cgroup.subtree_control", "");
  auto cg = JobCgroups::Open(fs, "surplus-n1");
  ASSERT_TRUE(cg.ok()) << cg.status();
  EXPECT_EQ(cg->mode(), JobCgroups::Mode::kV2);
  EXPECT_EQ(ReadFile(fs + "/cgroup.subtree_control"), "+cpu +memory");
  EXPECT_EQ(ReadFile(fs + "/surplus-n1/cgroup.subtree_control"), "+cpu +memory");
  auto procs = cg->Create("j1", CgroupLimits{50'000, 100'000, int64_t{1} << 30});
  ASSERT_TRUE(procs.ok()) << procs.status();
  EXPECT_EQ(*procs, std::vector<std::string>{fs + "/surplus-n1/job-j1/cgroup.procs"});
  EXPECT_EQ(ReadFile(fs + "/surplus-n1/job-j1/cpu.max"), "50000 100000");
  EXPECT_EQ(ReadFile(fs + "/surplus-n1/job-j1/memory.max"), "1073741824");
  EXPECT_FALSE(cg->Create("../escape", CgroupLimits{}).ok());
}

TEST_F(CgroupLayoutTest, V1UsesCpuAndMemoryHierarchies) {
  const std::string fs = root_ + "/v1";
  std::filesystem::create_directories(fs + "/cpu");
  std::filesystem::create_directories(fs + "/memory");
  Touch(fs + "/cpu/cpu.cfs_quota_us", "-1");
  Touch(fs + "/memory/memory.limit_in_bytes", "9223372036854771712");
  auto cg = JobCgroups::Open(fs, "surplus-n1");
  ASSERT_TRUE(cg.ok()) << cg.status();
  EXPECT_EQ(cg->mode(), JobCgroups::Mode::kV1);
  auto procs = cg->Create("j1", CgroupLimits{25'000, 100'000, int64_t{512} << 20});
  ASSERT_TRUE(procs.ok()) << procs.status();
  EXPECT_EQ(procs->size(), 2u);
  EXPECT_EQ(ReadFile(fs + "/cpu/surplus-n1/job-j1/cpu.cfs_quota_us"), "25000");
  EXPECT_EQ(ReadFile(fs + "/cpu/surplus-n1/job-j1/cpu.cfs_period_us"), "100000");
  EXPECT_EQ(ReadFile(fs + "/memory/surplus-n1/job-j1/memory.limit_in_bytes"), "536870912");
}

TEST_F(CgroupLayoutTest, NoControllersIsAClearError) {
  const std::string fs = root_ + "/none";
  std::filesystem::create_directories(fs);
  Touch(fs + "/cgroup.controllers", "pids\n");
  auto cg = JobCgroups::Open(fs, "surplus-n1");
  ASSERT_FALSE(cg.ok());
  EXPECT_NE(cg.status().message().find("cpu and memory"), std::string::npos) << cg.status();
  EXPECT_FALSE(JobCgroups::Open(root_ + "/missing", "surplus-n1").ok());
}

// On the host's real cgroups (needs root and writable cpu and memory controllers).
TEST_F(RunnerTest, JobRunsInItsCgroupAndItsMemoryLimitHolds) {
  const std::string name = "surplus-test-" + std::to_string(::getpid());
  auto cg = JobCgroups::Open("/sys/fs/cgroup", name);
  if (!cg.ok()) GTEST_SKIP() << "no writable cgroups on this host: " << cg.status().message();
  auto procs = cg->Create("mem", CgroupLimits{50'000, 100'000, int64_t{64} << 20});
  ASSERT_TRUE(procs.ok()) << procs.status();
  // `tail` keeps a line without a newline in memory: 512 MiB of zeros cannot fit in 64.
  ExecSpec spec = Shell("mem", "cat /proc/self/cgroup; head -c 536870912 /dev/zero | tail; echo tail=$?");
  spec.cgroup_procs = *procs;
  ASSERT_TRUE(runner_->Start(spec).ok());
  auto exit = runner_->WaitForExit("mem", absl::Seconds(30));
  ASSERT_TRUE(exit.has_value());
  const std::string log = ReadFile(spec.log_path);
  EXPECT_NE(log.find("/" + name + "/job-mem"), std::string::npos) << log;
  EXPECT_NE(log.find("tail=137"), std::string::npos) << "tail was not killed at the memory limit: " << log;
  cg->Remove("mem");
  for (const std::string& d : cg->Dirs("mem")) EXPECT_FALSE(std::filesystem::exists(d)) << d;
  for (const std::string& d : cg->Dirs("mem")) ::rmdir(std::filesystem::path(d).parent_path().c_str());
}

TEST_F(RunnerTest, JobRunsAsAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "only root can run a job as another user";
  auto nobody = LookupJobUser("nobody");
  if (!nobody.ok()) GTEST_SKIP() << "this host has no user 'nobody'";
  // The job's user must be able to reach its folder (as under a worker's state folder).
  std::filesystem::permissions(root_, std::filesystem::perms::owner_all | std::filesystem::perms::group_exec |
                                          std::filesystem::perms::others_exec);
  ExecSpec spec = Shell("user", "id -u; touch \"$HOME/written\" && echo wrote");
  spec.as_user = true;
  spec.uid = nobody->uid;
  spec.gid = nobody->gid;
  ASSERT_TRUE(runner_->Start(spec).ok());
  auto exit = runner_->WaitForExit("user", absl::Seconds(10));
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->exit_code, 0);
  const std::string log = ReadFile(spec.log_path);
  EXPECT_NE(log.find(std::to_string(nobody->uid) + "\n"), std::string::npos) << log;
  EXPECT_NE(log.find("wrote"), std::string::npos) << log;
  EXPECT_FALSE(LookupJobUser("no-such-user-here").ok());
}

}  // namespace
}  // namespace surplus::worker
