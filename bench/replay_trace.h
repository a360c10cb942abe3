// Loading the Mooncake request trace (JSON lines with input_length and hash_ids) for the storage
// replay benchmark, and an exact-LRU reference model of a prefix cache over its blocks.
#ifndef KVTIER_BENCH_REPLAY_TRACE_H_
#define KVTIER_BENCH_REPLAY_TRACE_H_

#include <cstdint>
#include <fstream>
#include <list>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace kvtier::bench {

inline constexpr uint32_t kTraceBlockTokens = 512;

struct TraceRequest {
  uint64_t input_tokens = 0;
  std::vector<uint64_t> blocks;  // hash_ids: equal ids are reusable prefix blocks.
  // Tokens of block i: full blocks, the last one possibly partial.
  uint64_t BlockTokens(size_t i) const {
    const uint64_t start = i * kTraceBlockTokens;
    if (start >= input_tokens) return 0;
    return std::min<uint64_t>(kTraceBlockTokens, input_tokens - start);
  }
};

// Minimal parser for the trace's fixed JSON shape; throws on malformed lines.
inline std::vector<TraceRequest> LoadTrace(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open trace " + path);
  std::vector<TraceRequest> out;
  std::string line;
  auto number_after = [](const std::string& s, const std::string& key) -> size_t {
    size_t p = s.find("\"" + key + "\"");
    if (p == std::string::npos) throw std::runtime_error("trace line without " + key);
    return s.find(':', p) + 1;
  };
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    TraceRequest r;
    r.input_tokens = std::stoull(line.substr(number_after(line, "input_length")));
    size_t p = line.find('[', number_after(line, "hash_ids"));
    const size_t end = line.find(']', p);
    if (p == std::string::npos || end == std::string::npos) throw std::runtime_error("bad hash_ids");
    ++p;
    while (p < end) {
      while (p < end && (line[p] == ' ' || line[p] == ',')) ++p;
      if (p >= end) break;
      size_t used = 0;
      r.blocks.push_back(std::stoull(line.substr(p, end - p), &used));
      p += used;
    }
    out.push_back(std::move(r));
  }
  return out;
}

// Exact LRU over whole blocks with room for `capacity_blocks`, used the way a prefix cache is:
// a request hits its longest cached prefix (each hit becomes most recent, in request order), then
// stores the blocks it computed (those not cached) as most recent.
class ExactLruModel {
 public:
  explicit ExactLruModel(uint64_t capacity_blocks) : capacity_(capacity_blocks) {}

  // Returns the number of prefix blocks hit.
  size_t Request(const std::vector<uint64_t>& blocks) {
    size_t hits = 0;
    while (hits < blocks.size() && where_.count(blocks[hits])) {
      Touch(blocks[hits]);
      ++hits;
    }
    for (size_t i = hits; i < blocks.size(); ++i) {
      if (where_.count(blocks[i])) continue;
      if (capacity_ == 0) continue;
      if (order_.size() == capacity_) {
        where_.erase(order_.back());
        order_.pop_back();
        ++evictions_;
      }
      order_.push_front(blocks[i]);
      where_[blocks[i]] = order_.begin();
    }
    return hits;
  }
  uint64_t evictions() const { return evictions_; }

 private:
  void Touch(uint64_t b) {
    order_.splice(order_.begin(), order_, where_[b]);
  }
  uint64_t capacity_;
  uint64_t evictions_ = 0;
  std::list<uint64_t> order_;
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> where_;
};

// Token hit rate of an unbounded cache (the ceiling any policy can reach).
inline double InfiniteCacheTokenHitRate(const std::vector<TraceRequest>& trace) {
  std::unordered_set<uint64_t> seen;
  uint64_t hit = 0, total = 0;
  for (const TraceRequest& r : trace) {
    total += r.input_tokens;
    for (size_t i = 0; i < r.blocks.size() && seen.count(r.blocks[i]); ++i) hit += r.BlockTokens(i);
    seen.insert(r.blocks.begin(), r.blocks.end());
  }
  return total == 0 ? 0 : static_cast<double>(hit) / total;
}

}  // namespace kvtier::bench

#endif  // KVTIER_BENCH_REPLAY_TRACE_H_
