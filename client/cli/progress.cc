#include "progress.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>

namespace kvtier::cli {

bool ProgressBar::StderrIsTerminal() { return isatty(STDERR_FILENO) == 1; }

ProgressBar::ProgressBar(uint64_t total, std::function<std::string()> suffix, bool enabled)
    : total_(total), suffix_(std::move(suffix)), enabled_(enabled && StderrIsTerminal()) {
  if (!enabled_) return;
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(200));
      Draw();
    }
  });
}

ProgressBar::~ProgressBar() {
  if (!enabled_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  Draw();
  std::fputc('\n', stderr);
}

void ProgressBar::Draw() {
  constexpr int kWidth = 30;
  const uint64_t done = done_.load(std::memory_order_relaxed);
  const double frac = total_ == 0 ? 1.0 : static_cast<double>(done) / total_;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar(filled, '=');
  if (filled < kWidth) bar += '>';
  bar.resize(kWidth, ' ');
  std::fprintf(stderr, "\r[%s] %llu/%llu %5.1f%% %s", bar.c_str(),
               static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_),
               frac * 100.0, suffix_ ? suffix_().c_str() : "");
  std::fflush(stderr);
}

}  // namespace kvtier::cli
