#pragma once
// Outgoing messages of a gRPC callback stream: gRPC allows one write in flight, so the
// rest wait here. Not synchronized: the reactor guards it with its own mutex.

#include <deque>
#include <utility>

namespace surplus::api {

template <typename Msg>
class WriteQueue {
 public:
  void Push(Msg m) { queue_.push_back(std::move(m)); }
  /// The next message to hand to StartWrite, or nullptr while a write is in flight or
  /// nothing waits. The pointer stays valid until WriteDone().
  const Msg* Next() {
    if (writing_ || queue_.empty()) return nullptr;
    current_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    return &current_;
  }
  /// Call from OnWriteDone.
  void WriteDone() { writing_ = false; }
  /// Nothing in flight and nothing waiting.
  bool Idle() const { return !writing_ && queue_.empty(); }

 private:
  std::deque<Msg> queue_;
  Msg current_;
  bool writing_ = false;
};

}  // namespace surplus::api
