#pragma once
// A fixed pool of threads for blocking work (database calls) so that gRPC reactors
// never block.

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace surplus::api {

class Executor {
 public:
  /// `max_queued` bounds the tasks waiting for a thread, for TrySubmit (0: no bound).
  explicit Executor(int threads, size_t max_queued = 0);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  void Submit(std::function<void()> task);
  /// Submit, unless `max_queued` tasks are already waiting: then false, and `task` is
  /// dropped (the caller refuses the work instead of queueing it without end).
  bool TrySubmit(std::function<void()> task);

 private:
  void Loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  const size_t max_queued_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace surplus::api
