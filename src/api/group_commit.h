#pragma once
// Group commit: concurrent requests are gathered and written in one transaction, so many
// share one commit. Writer threads take whatever is queued (up to a batch size) as soon as
// they are free: a lone request is written at once, and batches grow only under load.

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace surplus::api {

template <typename Item, typename Outcome>
class GroupCommit {
 public:
  /// Writes a batch in one transaction; returns one outcome per item, in order.
  using Write = std::function<std::vector<Outcome>(const std::vector<Item>&)>;
  using Done = std::function<void(const Outcome&)>;

  /// `writers` threads each commit batches of at most `max_batch` items.
  GroupCommit(Write write, int writers, size_t max_batch) : write_(std::move(write)), max_batch_(max_batch) {
    for (int i = 0; i < writers; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~GroupCommit() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  /// Queues an item; `done` runs on a writer thread once it is committed (or failed).
  void Add(Item item, Done done) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.emplace_back(std::move(item), std::move(done));
    }
    cv_.notify_one();
  }

  /// Queues an item and waits for its outcome.
  Outcome AddAndWait(Item item) {
    auto promise = std::make_shared<std::promise<Outcome>>();
    std::future<Outcome> result = promise->get_future();
    Add(std::move(item), [promise](const Outcome& o) { promise->set_value(o); });
    return result.get();
  }

 private:
  void Loop() {
    for (;;) {
      std::vector<Item> items;
      std::vector<Done> dones;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and everything queued was written
        while (!queue_.empty() && items.size() < max_batch_) {
          items.push_back(std::move(queue_.front().first));
          dones.push_back(std::move(queue_.front().second));
          queue_.pop_front();
        }
      }
      const std::vector<Outcome> outcomes = write_(items);
      for (size_t i = 0; i < dones.size(); ++i) dones[i](outcomes[i]);
    }
  }

  const Write write_;
  const size_t max_batch_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Item, Done>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace surplus::api
