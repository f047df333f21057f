// The control plane's executor: a bounded queue refuses work instead of growing.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "src/api/executor.h"

namespace surplus::api {
namespace {

TEST(Executor, BoundedQueueRefusesWhenFullAndTakesWorkAgainOnceDrained) {
  std::atomic<int> ran{0};
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> started;
  {
    Executor ex(/*threads=*/1, /*max_queued=*/2);
    ex.Submit([&] {
      started.set_value();
      released.wait();
      ++ran;
    });
    started.get_future().wait();  // the one thread is busy; the queue is empty
    EXPECT_TRUE(ex.TrySubmit([&] { ++ran; }));
    EXPECT_TRUE(ex.TrySubmit([&] { ++ran; }));
    EXPECT_FALSE(ex.TrySubmit([&] { ran += 100; }));  // two already wait
    release.set_value();
    for (int i = 0; i < 500 && ran.load() < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    EXPECT_EQ(ran.load(), 3);
    EXPECT_TRUE(ex.TrySubmit([&] { ++ran; }));
  }  // the destructor runs what is queued, then joins
  EXPECT_EQ(ran.load(), 4);
}

TEST(Executor, UnboundedQueueNeverRefuses) {
  std::atomic<int> ran{0};
  {
    Executor ex(/*threads=*/2);
    for (int i = 0; i < 1000; ++i) EXPECT_TRUE(ex.TrySubmit([&] { ++ran; }));
  }
  EXPECT_EQ(ran.load(), 1000);
}

}  // namespace
}  // namespace surplus::api
