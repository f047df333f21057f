#pragma once
// Group commit for submits: concurrent requests are gathered and written in one
// transaction, so many submits share one durable commit (WAL flush).

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "src/store/job_store.h"

namespace surplus::api {

class SubmitBatcher {
 public:
  using Done = std::function<void(const store::SubmitOutcome&)>;

  /// `writers` threads each commit batches of at most `max_batch` submits.
  SubmitBatcher(store::PgJobStore& store, int writers, size_t max_batch);
  ~SubmitBatcher();

  /// Queues a submit; `done` runs on a writer thread once it is committed (or failed).
  void Submit(store::SubmitItem item, Done done);

 private:
  void Loop();
  store::PgJobStore& store_;
  const size_t max_batch_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<store::SubmitItem, Done>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace surplus::api
