#pragma once
// Child processes for integration and end-to-end tests.

#include <sys/types.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace surplus::testing {

/// Runs argv to completion; returns the exit code (128+signal when killed) and captures
/// stdout (and stderr when `merge_stderr`).
int RunCommand(const std::vector<std::string>& argv, std::string* output = nullptr, bool merge_stderr = true,
               const std::map<std::string, std::string>& extra_env = {});

/// A background child in its own process group; killed (SIGKILL) on destruction.
class Child {
 public:
  Child() = default;
  /// Starts argv with stdout+stderr appended to `log_path`.
  Child(const std::vector<std::string>& argv, const std::string& log_path,
        const std::map<std::string, std::string>& extra_env = {});
  ~Child();
  Child(Child&& o) noexcept;
  Child& operator=(Child&& o) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  bool Running();
  void Signal(int sig);
  /// Sends `sig` and waits for the exit; returns the status as RunCommand does.
  int Stop(int sig = 15, int timeout_ms = 10000);

 private:
  pid_t pid_ = -1;
};

/// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();

/// Polls `pred` every 50 ms until true or `timeout_ms` passes.
bool WaitFor(const std::function<bool()>& pred, int timeout_ms);

/// A fresh temporary directory (removed by the caller if wanted).
std::string MakeTempDir(const std::string& prefix);

/// Reads a whole file ("" when missing).
std::string ReadFile(const std::string& path);
/// Writes `data` to `path` (replacing it); aborts the test binary when it cannot.
void WriteFile(const std::string& path, const std::string& data);

}  // namespace surplus::testing
