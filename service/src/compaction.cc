#include "compaction.h"

#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "kvtier/common/status.h"
#include "kvtier/kernels/compacted.h"
#include "kvtier/kernels/selection.h"

namespace kvtier::service {
namespace {

struct MethodSpec {
  std::string name;
  std::map<std::string, std::string> params;
};

absl::StatusOr<MethodSpec> ParseMethod(const std::string& text) {
  MethodSpec spec;
  size_t colon = text.find(':');
  spec.name = text.substr(0, colon);
  if (colon == std::string::npos) return spec;
  std::string rest = text.substr(colon + 1);
  size_t pos = 0;
  while (pos <= rest.size()) {
    size_t comma = rest.find(',', pos);
    std::string item = rest.substr(pos, comma == std::string::npos ? std::string::npos
                                                                   : comma - pos);
    size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("method '", text, "': expected key=value, got '", item, "'"));
    }
    spec.params[item.substr(0, eq)] = item.substr(eq + 1);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return spec;
}

// Takes an unsigned integer parameter (removing it from `spec`), or `fallback`.
absl::StatusOr<uint32_t> TakeUint(MethodSpec* spec, const std::string& key, uint32_t fallback) {
  auto it = spec->params.find(key);
  if (it == spec->params.end()) return fallback;
  const std::string v = it->second;
  spec->params.erase(it);
  if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("method ", spec->name, ": ", key, " must be an unsigned integer"));
  }
  return static_cast<uint32_t>(std::stoul(v));
}

absl::Status NoLeftovers(const MethodSpec& spec) {
  if (spec.params.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("method ", spec.name, ": unknown parameter '", spec.params.begin()->first, "'"));
}

absl::StatusOr<kernels::Pooling> TakePooling(MethodSpec* spec) {
  auto it = spec->params.find("pool");
  if (it == spec->params.end()) return kernels::Pooling::kMax;
  std::string v = it->second;
  spec->params.erase(it);
  if (v == "max") return kernels::Pooling::kMax;
  if (v == "avg") return kernels::Pooling::kAvg;
  return absl::InvalidArgumentError("pool must be max or avg");
}

}  // namespace

absl::StatusOr<CompactionOutput> Compact(const NamespaceInfo& ns, const CompactionInput& in) {
  const kernels::KvLayout& l = ns.layout;
  if (l.kind != kernels::LayoutKind::kMha) {
    return absl::InvalidArgumentError("Compact needs an MHA/GQA namespace (MLA has no KV heads)");
  }
  if (in.num_tokens == 0) return absl::InvalidArgumentError("num_tokens is 0");
  if (in.kv->size() != l.ChunkBytes(in.num_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat("kv is ", in.kv->size(), " bytes; ",
                                                   in.num_tokens, " tokens of this layout are ",
                                                   l.ChunkBytes(in.num_tokens)));
  }
  KVTIER_ASSIGN_OR_RETURN(MethodSpec spec, ParseMethod(in.method));
  const size_t elt = kernels::DTypeSize(l.dtype);

  // Keys of every layer, contiguous [layer][kv_head][token][dim] (the K half of each layer).
  std::string keys;
  auto gather_keys = [&]() {
    const size_t k_bytes = static_cast<size_t>(l.num_kv_heads) * in.num_tokens * l.head_dim * elt;
    keys.resize(k_bytes * l.num_layers);
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      std::memcpy(keys.data() + layer * k_bytes, in.kv->data() + layer * 2 * k_bytes, k_bytes);
    }
  };
  auto selection_input = [&](uint32_t num_queries) -> absl::StatusOr<kernels::SelectionInput> {
    const size_t want =
        static_cast<size_t>(l.num_layers) * l.num_query_heads * num_queries * l.head_dim * elt;
    if (in.queries->size() != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          "observation_queries is ", in.queries->size(), " bytes; [layer][query_head][", num_queries,
          "][head_dim] is ", want));
    }
    gather_keys();
    kernels::SelectionInput s;
    s.keys = keys.data();
    s.queries = in.queries->data();
    s.dtype = l.dtype;
    s.num_layers = l.num_layers;
    s.num_kv_heads = l.num_kv_heads;
    s.num_query_heads = l.num_query_heads;
    s.head_dim = l.head_dim;
    s.num_tokens = in.num_tokens;
    s.num_queries = num_queries;
    return s;
  };

  kernels::Selection selection;
  if (spec.name == "snapkv" || spec.name == "pyramidkv") {
    kernels::SnapKvOptions o =
        spec.name == "pyramidkv" ? kernels::SnapKvOptions::PyramidKv() : kernels::SnapKvOptions();
    KVTIER_ASSIGN_OR_RETURN(o.budget, TakeUint(&spec, "budget", o.budget));
    KVTIER_ASSIGN_OR_RETURN(o.window, TakeUint(&spec, "window", in.window ? in.window : o.window));
    KVTIER_ASSIGN_OR_RETURN(o.pool_kernel, TakeUint(&spec, "kernel", o.pool_kernel));
    KVTIER_ASSIGN_OR_RETURN(o.pyramid_beta, TakeUint(&spec, "beta", o.pyramid_beta));
    KVTIER_ASSIGN_OR_RETURN(o.pooling, TakePooling(&spec));
    KVTIER_RETURN_IF_ERROR(NoLeftovers(spec));
    if (in.window != 0 && in.window != o.window) {
      return absl::InvalidArgumentError("window in the request and in the method differ");
    }
    KVTIER_ASSIGN_OR_RETURN(kernels::SelectionInput s, selection_input(o.window));
    KVTIER_ASSIGN_OR_RETURN(selection, kernels::SelectSnapKv(o, s));
  } else if (spec.name == "h2o") {
    kernels::H2oOptions o = kernels::H2oOptions::Fraction(in.num_tokens);
    KVTIER_ASSIGN_OR_RETURN(o.heavy_budget, TakeUint(&spec, "heavy", o.heavy_budget));
    KVTIER_ASSIGN_OR_RETURN(o.recent_budget, TakeUint(&spec, "recent", o.recent_budget));
    KVTIER_RETURN_IF_ERROR(NoLeftovers(spec));
    if (!in.scores->empty()) {
      const size_t per_head = static_cast<size_t>(l.num_layers) * in.num_tokens * sizeof(float);
      kernels::H2oScoresInput s;
      s.scores = reinterpret_cast<const float*>(in.scores->data());
      s.num_layers = l.num_layers;
      s.num_kv_heads = l.num_kv_heads;
      s.num_query_heads = l.num_query_heads;
      s.num_tokens = in.num_tokens;
      if (in.scores->size() == per_head * l.num_query_heads) {
        s.num_score_heads = l.num_query_heads;
      } else if (in.scores->size() == per_head * l.num_kv_heads) {
        s.num_score_heads = l.num_kv_heads;
      } else {
        return absl::InvalidArgumentError(
            "attention_scores must be fp32 [layer][query_heads or kv_heads][num_tokens]");
      }
      KVTIER_ASSIGN_OR_RETURN(selection, kernels::SelectH2o(o, s));
    } else {
      KVTIER_ASSIGN_OR_RETURN(kernels::SelectionInput s, selection_input(in.num_tokens));
      KVTIER_ASSIGN_OR_RETURN(selection, kernels::SelectH2oFromQueries(o, s));
    }
  } else if (spec.name == "streamingllm") {
    kernels::StreamingOptions o;
    KVTIER_ASSIGN_OR_RETURN(o.sink_tokens, TakeUint(&spec, "sink", o.sink_tokens));
    KVTIER_ASSIGN_OR_RETURN(o.recent_tokens, TakeUint(&spec, "recent", o.recent_tokens));
    KVTIER_RETURN_IF_ERROR(NoLeftovers(spec));
    KVTIER_ASSIGN_OR_RETURN(selection, kernels::SelectStreaming(o, l.num_layers, l.num_kv_heads,
                                                                in.num_tokens));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown method '", spec.name, "' (expected snapkv, pyramidkv, h2o or streamingllm)"));
  }

  CompactionOutput out;
  kernels::CompactedSource src;
  src.kv = in.kv->data();
  src.layout = l;
  src.num_tokens = in.num_tokens;
  KVTIER_RETURN_IF_ERROR(kernels::EncodeCompacted(ns.codec, src, selection, &out.payload));
  out.mean_kept = static_cast<double>(selection.TotalKept()) /
                  (static_cast<double>(l.num_layers) * l.num_kv_heads);
  return out;
}

}  // namespace kvtier::service
