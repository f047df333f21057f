#pragma once
// One MPS control daemon per GPU, each with its own pipe and log folders under the
// worker's state folder, so that it serves only the worker's jobs on that GPU and never
// interferes with an MPS daemon the node's owner may run in the default folders.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace surplus::worker {

struct MpsDaemonOptions {
  std::string control_binary = "nvidia-cuda-mps-control";  ///< searched in PATH
  std::string gpu_uuid;   ///< the only GPU the daemon (and its server) sees
  std::string pipe_dir;   ///< CUDA_MPS_PIPE_DIRECTORY; keep short (unix socket path)
  std::string log_dir;    ///< CUDA_MPS_LOG_DIRECTORY
};

class MpsDaemon {
 public:
  /// Starts `nvidia-cuda-mps-control -d` for one GPU and waits until its control socket
  /// exists. A daemon already running on the same pipe folder (worker restart) is adopted.
  static absl::StatusOr<std::unique_ptr<MpsDaemon>> Start(const MpsDaemonOptions& options);
  /// Quits the daemon (and with it its server).
  ~MpsDaemon();
  MpsDaemon(const MpsDaemon&) = delete;
  MpsDaemon& operator=(const MpsDaemon&) = delete;

  /// Sends "quit" and waits up to 10 s for the daemon to exit.
  absl::Status Stop();
  /// Sends one command to the control daemon and returns its reply.
  absl::StatusOr<std::string> Command(const std::string& command) const;

  int64_t pid() const { return pid_; }
  const MpsDaemonOptions& options() const { return options_; }

 private:
  explicit MpsDaemon(const MpsDaemonOptions& options) : options_(options) {}
  MpsDaemonOptions options_;
  int64_t pid_ = 0;
  bool stopped_ = false;
};

using EnvOverrides = std::vector<std::pair<std::string, std::string>>;

/// Runs `argv` (argv[0] searched in PATH) with `env` added to the current environment,
/// writes `stdin_text` to its standard input, waits for it and returns its standard
/// output; INTERNAL when it cannot start or exits non-zero. With `capture_output` false
/// its output goes to /dev/null (for programs that daemonize and keep the pipe open).
absl::StatusOr<std::string> RunProcess(const std::vector<std::string>& argv,
                                       const EnvOverrides& env, const std::string& stdin_text,
                                       bool capture_output = true);

}  // namespace surplus::worker
