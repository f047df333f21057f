#include "src/api/submit_batcher.h"

namespace surplus::api {

SubmitBatcher::SubmitBatcher(store::PgJobStore& store, int writers, size_t max_batch)
    : store_(store), max_batch_(max_batch) {
  for (int i = 0; i < writers; ++i) threads_.emplace_back([this] { Loop(); });
}

SubmitBatcher::~SubmitBatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void SubmitBatcher::Submit(store::SubmitItem item, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.emplace_back(std::move(item), std::move(done));
  }
  cv_.notify_one();
}

void SubmitBatcher::Loop() {
  for (;;) {
    std::vector<store::SubmitItem> items;
    std::vector<Done> dones;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      while (!queue_.empty() && items.size() < max_batch_) {
        items.push_back(std::move(queue_.front().first));
        dones.push_back(std::move(queue_.front().second));
        queue_.pop_front();
      }
    }
    std::vector<store::SubmitOutcome> outcomes = store_.SubmitBatch(items);
    for (size_t i = 0; i < dones.size(); ++i) dones[i](outcomes[i]);
  }
}

}  // namespace surplus::api
