#include "gpu_worker/cuda/mps_daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

extern char** environ;

namespace surplus::worker {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Alive and not a zombie: the daemon is not our child once it has daemonized.
bool ProcessAlive(int64_t pid) {
  if (pid <= 0 || ::kill(static_cast<pid_t>(pid), 0) != 0) return false;
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] != 'Z';
}

int64_t ReadPidFile(const std::string& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int64_t pid = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &pid)) return 0;
  return pid;
}

EnvOverrides DaemonEnv(const MpsDaemonOptions& o) {
  return {{"CUDA_VISIBLE_DEVICES", o.gpu_uuid},
          {"CUDA_MPS_PIPE_DIRECTORY", o.pipe_dir},
          {"CUDA_MPS_LOG_DIRECTORY", o.log_dir}};
}

}  // namespace

absl::StatusOr<std::string> RunProcess(const std::vector<std::string>& argv,
                                       const EnvOverrides& env, const std::string& stdin_text,
                                       bool capture_output) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  // Environment: the current one with the overrides replacing same-named variables.
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    absl::string_view kv(*e);
    bool overridden = false;
    for (const auto& [k, v] : env) {
      if (absl::StartsWith(kv, absl::StrCat(k, "="))) overridden = true;
    }
    if (!overridden) env_strings.emplace_back(kv);
  }
  for (const auto& [k, v] : env) env_strings.push_back(absl::StrCat(k, "=", v));
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> argp;
  for (auto& s : args) argp.push_back(s.data());
  argp.push_back(nullptr);

  int in_pipe[2], out_pipe[2] = {-1, -1};
  if (::pipe2(in_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  if (capture_output && ::pipe2(out_pipe, O_CLOEXEC) != 0) {
    ::close(in_pipe[0]);
    ::close(in_pipe[1]);
    return absl::InternalError("pipe failed");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], 0);
  if (capture_output) {
    posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  } else {
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  }
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  // The daemon outlives the worker: it must not keep the worker's sockets and files open.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, argp[0], &actions, nullptr, argp.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(in_pipe[0]);
  if (capture_output) ::close(out_pipe[1]);
  if (rc != 0) {
    ::close(in_pipe[1]);
    if (capture_output) ::close(out_pipe[0]);
    return absl::InternalError(absl::StrCat("cannot run ", argv[0], ": ", std::strerror(rc)));
  }
  // Small inputs only: a single write cannot block on a pipe of 64 KiB.
  if (!stdin_text.empty()) {
    ssize_t ignored = ::write(in_pipe[1], stdin_text.data(), stdin_text.size());
    (void)ignored;
  }
  ::close(in_pipe[1]);
  std::string output;
  if (capture_output) {
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(out_pipe[0], buf, sizeof(buf));
      if (n > 0) {
        output.append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        break;
      }
    }
    ::close(out_pipe[0]);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(argv[0], " failed (status ", status, "): ", output));
  }
  return output;
}

absl::StatusOr<std::unique_ptr<MpsDaemon>> MpsDaemon::Start(const MpsDaemonOptions& options) {
  if (options.gpu_uuid.empty() || options.pipe_dir.empty() || options.log_dir.empty()) {
    return absl::InvalidArgumentError("MPS daemon needs a GPU UUID, a pipe and a log folder");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.pipe_dir, ec);
  std::filesystem::create_directories(options.log_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create MPS folders under ",
                                            options.pipe_dir, ": ", ec.message()));
  }
  std::unique_ptr<MpsDaemon> daemon(new MpsDaemon(options));
  const std::string control = options.pipe_dir + "/control";
  const std::string pid_file = options.pipe_dir + "/nvidia-cuda-mps-control.pid";
  const int64_t existing = ReadPidFile(pid_file);
  if (Exists(control) && ProcessAlive(existing)) {
    daemon->pid_ = existing;  // adopted from a previous run of the worker
    return daemon;
  }
  // Stale files of a daemon that died would make the new one refuse to start.
  std::filesystem::remove(control, ec);
  std::filesystem::remove(pid_file, ec);

  auto started = RunProcess({options.control_binary, "-d"}, DaemonEnv(options), "",
                            /*capture_output=*/false);
  if (!started.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("MPS control daemon did not start: ", started.status().message()));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!(Exists(control) && ReadPidFile(pid_file) > 0)) {
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("MPS control daemon for ", options.gpu_uuid, " did not create ", control));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  daemon->pid_ = ReadPidFile(pid_file);
  return daemon;
}

MpsDaemon::~MpsDaemon() { Stop().IgnoreError(); }

absl::StatusOr<std::string> MpsDaemon::Command(const std::string& command) const {
  return RunProcess({options_.control_binary}, DaemonEnv(options_), command + "\n");
}

absl::Status MpsDaemon::Stop() {
  if (stopped_) return absl::OkStatus();
  stopped_ = true;
  // The servers the daemon started go with it; wait for them too, so that the GPU is
  // free of our MPS processes when Stop returns.
  std::vector<int64_t> pids = {pid_};
  if (auto servers = Command("get_server_list"); servers.ok()) {
    for (absl::string_view line : absl::StrSplit(*servers, '\n', absl::SkipWhitespace())) {
      int64_t server = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &server)) pids.push_back(server);
    }
  }
  auto quit = Command("quit");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (int64_t pid : pids) {
    while (ProcessAlive(pid)) {
      if (std::chrono::steady_clock::now() > deadline) {
        // Last resort, so that no MPS process outlives the worker that started it.
        ::kill(static_cast<pid_t>(pid), SIGTERM);
        return absl::DeadlineExceededError(
            absl::StrCat("MPS process ", pid, " ignored quit; sent SIGTERM"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return quit.ok() ? absl::OkStatus() : quit.status();
}

}  // namespace surplus::worker
