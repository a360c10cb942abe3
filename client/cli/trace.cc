// A strict reader for the flat JSON objects of Mooncake traces (numbers and arrays of numbers).
#include "trace.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>

#include <fmt/format.h>

namespace kvtier::cli {
namespace {

class Scanner {
 public:
  explicit Scanner(const std::string& s) : s_(s) {}
  void Skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool Eat(char c) {
    Skip();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  std::optional<std::string> String() {
    if (!Eat('"')) return std::nullopt;
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      if (s_[i_] == '\\') return std::nullopt;  // trace keys never need escapes
      out += s_[i_++];
    }
    if (i_ >= s_.size()) return std::nullopt;
    ++i_;
    return out;
  }
  // A JSON number; fractional parts are accepted and truncated (timestamps may be floats).
  std::optional<double> Number() {
    Skip();
    const char* begin = s_.c_str() + i_;
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(begin, &end);
    if (end == begin || errno != 0) return std::nullopt;
    i_ += static_cast<size_t>(end - begin);
    return v;
  }
  // Skips any value we do not need (string, number, array, literal).
  bool SkipValue() {
    Skip();
    if (i_ >= s_.size()) return false;
    if (s_[i_] == '"') return String().has_value();
    if (s_[i_] == '[') {
      ++i_;
      if (Eat(']')) return true;
      do {
        if (!SkipValue()) return false;
      } while (Eat(','));
      return Eat(']');
    }
    if (std::isalpha(static_cast<unsigned char>(s_[i_]))) {
      while (i_ < s_.size() && std::isalpha(static_cast<unsigned char>(s_[i_]))) ++i_;
      return true;
    }
    return Number().has_value();
  }
  bool AtEnd() {
    Skip();
    return i_ == s_.size();
  }

 private:
  const std::string& s_;
  size_t i_ = 0;
};

}  // namespace

absl::StatusOr<TraceRequest> ParseTraceLine(const std::string& line) {
  Scanner sc(line);
  TraceRequest r;
  bool ts = false, in = false, out = false, ids = false;
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(fmt::format("trace line is not a Mooncake request: {}", why));
  };
  if (!sc.Eat('{')) return bad("expected '{'");
  if (!sc.Eat('}')) {
    do {
      auto key = sc.String();
      if (!key) return bad("expected a quoted key");
      if (!sc.Eat(':')) return bad("expected ':'");
      if (*key == "hash_ids") {
        if (!sc.Eat('[')) return bad("hash_ids is not an array");
        if (!sc.Eat(']')) {
          do {
            auto v = sc.Number();
            if (!v || *v < 0) return bad("hash_ids holds a non-number or a negative id");
            r.hash_ids.push_back(static_cast<uint64_t>(*v));
          } while (sc.Eat(','));
          if (!sc.Eat(']')) return bad("unterminated hash_ids");
        }
        ids = true;
      } else if (*key == "timestamp" || *key == "input_length" || *key == "output_length") {
        auto v = sc.Number();
        if (!v || *v < 0) return bad(fmt::format("{} is not a non-negative number", *key));
        if (*key == "timestamp") r.timestamp_ms = static_cast<int64_t>(*v), ts = true;
        if (*key == "input_length") r.input_length = static_cast<uint64_t>(*v), in = true;
        if (*key == "output_length") r.output_length = static_cast<uint64_t>(*v), out = true;
      } else if (!sc.SkipValue()) {
        return bad(fmt::format("bad value for '{}'", *key));
      }
    } while (sc.Eat(','));
    if (!sc.Eat('}')) return bad("expected '}'");
  }
  if (!sc.AtEnd()) return bad("trailing characters");
  if (!ts || !in || !out || !ids) {
    return bad("needs timestamp, input_length, output_length and hash_ids");
  }
  return r;
}

absl::StatusOr<std::vector<TraceRequest>> ReadTrace(const std::string& path, size_t limit) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(fmt::format("cannot open trace {}: {}", path, std::strerror(errno)));
  }
  std::vector<TraceRequest> out;
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto r = ParseTraceLine(line);
    if (!r.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("{}:{}: {}", path, n, std::string(r.status().message())));
    }
    out.push_back(std::move(*r));
    if (limit > 0 && out.size() >= limit) break;
  }
  return out;
}

}  // namespace kvtier::cli
