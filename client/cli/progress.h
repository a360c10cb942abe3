// A one-line progress bar on stderr, drawn only when stderr is a terminal (so logs and pipes stay
// clean). Thread-safe: Update may be called from any thread; a background thread redraws.
#ifndef KVTIER_CLIENT_CLI_PROGRESS_H_
#define KVTIER_CLIENT_CLI_PROGRESS_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace kvtier::cli {

class ProgressBar {
 public:
  // `suffix` is called on each redraw for extra text (e.g. the running hit rate).
  ProgressBar(uint64_t total, std::function<std::string()> suffix, bool enabled);
  ~ProgressBar();  // draws the final state and ends the line
  void Set(uint64_t done) { done_.store(done, std::memory_order_relaxed); }

  static bool StderrIsTerminal();

 private:
  void Draw();
  const uint64_t total_;
  std::function<std::string()> suffix_;
  const bool enabled_;
  std::atomic<uint64_t> done_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace kvtier::cli

#endif  // KVTIER_CLIENT_CLI_PROGRESS_H_
