// Python bindings of the kvtier client SDK (module kvtier._kvtier; the package kvtier wraps it).
// Tensors cross as NumPy arrays (C order, the namespace dtype: float16, float32, or uint16 holding
// bf16 bits); the GIL is released while a call waits on the daemon, so Python threads overlap.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <type_traits>

#include "kvtier/client/client.h"
#include "kvtier/kernels/codec.h"

namespace py = pybind11;

namespace kvtier::client {
namespace {

// Errors become kvtier.Error(code_name, message) on the Python side.
PyObject* g_error = nullptr;

[[noreturn]] void Raise(const absl::Status& st) {
  PyErr_SetObject(g_error, py::make_tuple(absl::StatusCodeToString(st.code()),
                                          std::string(st.message()))
                               .ptr());
  throw py::error_already_set();
}

template <typename T>
T Unwrap(absl::StatusOr<T> v) {
  if (!v.ok()) Raise(v.status());
  return std::move(*v);
}

kernels::DType ParseDType(const std::string& s) {
  if (s == "fp16" || s == "float16") return kernels::DType::kFloat16;
  if (s == "bf16" || s == "bfloat16") return kernels::DType::kBFloat16;
  if (s == "fp32" || s == "float32") return kernels::DType::kFloat32;
  throw py::value_error("dtype must be fp16, bf16 or fp32, got '" + s + "'");
}

py::dict NamespaceDict(const NamespaceSpec& ns) {
  py::dict d;
  d["name"] = ns.name;
  d["model_id"] = ns.model_id;
  d["codec"] = ns.codec;
  d["tokens_per_chunk"] = ns.tokens_per_chunk;
  d["salt"] = py::bytes(ns.salt);
  d["kind"] = ns.layout.kind == kernels::LayoutKind::kMla ? "mla" : "mha";
  d["dtype"] = kernels::DTypeName(ns.layout.dtype);
  d["layers"] = ns.layout.num_layers;
  d["kv_heads"] = ns.layout.num_kv_heads;
  d["q_heads"] = ns.layout.num_query_heads;
  d["head_dim"] = ns.layout.head_dim;
  d["latent_dim"] = ns.layout.latent_dim;
  d["rope_dim"] = ns.layout.rope_dim;
  d["bytes_per_token"] = ns.layout.BytesPerToken();
  return d;
}

py::dict StatsDict(const CallStats& s) {
  py::dict d;
  d["latency_us"] = s.latency.count() / 1e3;
  d["bytes_sent"] = s.bytes_sent;
  d["bytes_received"] = s.bytes_received;
  d["attempts"] = s.attempts;
  d["retries"] = s.retries();
  d["ok"] = s.status.ok();
  return d;
}

ChunkKey KeyFrom(const py::bytes& b) {
  return Unwrap(ChunkKey::FromBytes(std::string(b)));
}

std::vector<ChunkKey> KeysFrom(const py::iterable& keys) {
  std::vector<ChunkKey> out;
  for (auto k : keys) out.push_back(KeyFrom(py::reinterpret_borrow<py::bytes>(k)));
  return out;
}

const char* NumpyDtype(kernels::DType d) {
  switch (d) {
    case kernels::DType::kFloat32: return "float32";
    case kernels::DType::kBFloat16: return "uint16";  // bf16 bits
    default: return "float16";
  }
}

std::vector<py::ssize_t> Shape(const kernels::KvLayout& l, uint32_t tokens) {
  if (l.kind == kernels::LayoutKind::kMla) {
    return {static_cast<py::ssize_t>(l.num_layers), static_cast<py::ssize_t>(tokens),
            static_cast<py::ssize_t>(l.latent_dim + l.rope_dim)};
  }
  return {static_cast<py::ssize_t>(l.num_layers), 2, static_cast<py::ssize_t>(l.num_kv_heads),
          static_cast<py::ssize_t>(tokens), static_cast<py::ssize_t>(l.head_dim)};
}

// A client plus the statistics of its last call and a namespace cache (for shapes and keys).
class PyClient {
 public:
  PyClient(const std::string& target, const std::string& token, bool tls,
           const std::string& ca_pem, const std::string& server_name, uint32_t timeout_ms,
           uint32_t attempts, uint32_t connect_timeout_ms, uint64_t shared_memory_bytes) {
    ClientOptions o;
    o.shared_memory_bytes = shared_memory_bytes;
    o.target = target;
    o.token = token;
    o.tls = tls;
    o.tls_root_certs_pem = ca_pem;
    o.tls_server_name = server_name;
    o.default_deadline = std::chrono::milliseconds(timeout_ms);
    o.connect_timeout = std::chrono::milliseconds(connect_timeout_ms);
    o.retry.max_attempts = attempts;
    absl::StatusOr<std::unique_ptr<Client>> c;
    {
      py::gil_scoped_release nogil;
      c = Client::Connect(o);
    }
    client_ = Unwrap(std::move(c));
  }

  py::dict CreateNamespace(const std::string& name, uint32_t layers, uint32_t kv_heads,
                           uint32_t head_dim, uint32_t q_heads, const std::string& dtype,
                           const std::string& codec, uint32_t tokens_per_chunk,
                           const py::bytes& salt, const std::string& model_id, bool mla,
                           uint32_t latent_dim, uint32_t rope_dim) {
    NamespaceSpec s;
    s.name = name;
    s.model_id = model_id;
    s.codec = codec;
    s.tokens_per_chunk = tokens_per_chunk;
    s.salt = std::string(salt);
    const auto dt = ParseDType(dtype);
    s.layout = mla ? kernels::KvLayout::Mla(layers, latent_dim, rope_dim, dt)
                   : kernels::KvLayout::Mha(layers, kv_heads, q_heads ? q_heads : kv_heads,
                                            head_dim, dt);
    return NamespaceDict(Remember(Call([&](const CallOptions& c) {
      return client_->CreateNamespace(s, c);
    })));
  }

  py::dict GetNamespace(const std::string& name) { return NamespaceDict(Resolve(name, true)); }

  py::list ListNamespaces() {
    py::list out;
    for (const auto& ns : Call([&](const CallOptions& c) { return client_->ListNamespaces(c); })) {
      out.append(NamespaceDict(Remember(ns)));
    }
    return out;
  }

  py::list ComputeKeys(const std::string& ns, py::array_t<uint32_t, py::array::c_style |
                                                                      py::array::forcecast> tokens,
                       bool include_partial_tail) {
    const NamespaceSpec& spec = Resolve(ns, false);
    const auto keys = Client::ComputeKeys(
        spec, absl::MakeConstSpan(tokens.data(), static_cast<size_t>(tokens.size())),
        include_partial_tail);
    py::list out;
    for (const auto& k : keys) out.append(py::bytes(std::string(k.view())));
    return out;
  }

  py::dict Lookup(const std::string& ns, const py::iterable& keys, uint32_t lease_ms,
                  uint32_t timeout_ms) {
    const auto k = KeysFrom(keys);
    const LookupResult r = Call(
        [&](const CallOptions& c) { return client_->Lookup(ns, k, lease_ms, c); }, timeout_ms);
    py::dict d;
    d["prefix_chunks"] = r.prefix_chunks;
    d["prefix_tokens"] = r.prefix_tokens;
    d["lease_id"] = r.lease_id;
    py::list tiers;
    for (Tier t : r.tiers) tiers.append(TierName(t));
    d["tiers"] = tiers;
    return d;
  }

  py::dict Put(const std::string& ns, const py::bytes& key, const py::array& array, bool payload,
               uint64_t first_position, bool ends_sequence, bool pin, uint32_t timeout_ms) {
    const NamespaceSpec& spec = Resolve(ns, false);
    PutOptions put;
    put.format = payload ? DataFormat::kPayload : DataFormat::kTensor;
    put.first_position = first_position;
    put.ends_sequence = ends_sequence;
    put.pin = pin;
    if (!(array.flags() & py::array::c_style)) {
      throw py::value_error("array must be C-contiguous (use numpy.ascontiguousarray)");
    }
    const size_t bytes = static_cast<size_t>(array.nbytes());
    if (payload) {
      auto info = kernels::InspectPayload(
          absl::MakeConstSpan(static_cast<const uint8_t*>(array.data()), bytes));
      if (!info.ok()) Raise(info.status());
      put.num_tokens = info->num_tokens;
    } else {
      const std::string want = NumpyDtype(spec.layout.dtype);
      if (std::string(py::str(array.dtype())) != want) {
        throw py::value_error("array dtype " + std::string(py::str(array.dtype())) +
                              " does not match the namespace dtype (expected " + want + ")");
      }
      const size_t per_token = spec.layout.BytesPerToken();
      const int token_axis = spec.layout.kind == kernels::LayoutKind::kMla ? 1 : 3;
      if (array.ndim() != (token_axis == 1 ? 3 : 5)) {
        throw py::value_error("array must be shaped (layers, 2, kv_heads, tokens, head_dim), "
                              "or (layers, tokens, latent+rope) for MLA");
      }
      put.num_tokens = static_cast<uint32_t>(array.shape(token_axis));
      const auto want_shape = Shape(spec.layout, put.num_tokens);
      for (int i = 0; i < array.ndim(); ++i) {
        if (array.shape(i) != want_shape[i]) {
          throw py::value_error("array shape does not match the namespace layout");
        }
      }
      if (bytes != per_token * put.num_tokens) throw py::value_error("array size mismatch");
    }
    const ChunkKey k = KeyFrom(key);
    // The array is kept alive by the caller for the duration of this (blocking) call.
    const auto data = absl::MakeConstSpan(static_cast<const uint8_t*>(array.data()), bytes);
    const PutResult r = Call(
        [&](const CallOptions& c) { return client_->Put(ns, k, data, put, c); }, timeout_ms);
    py::dict d;
    d["stored_bytes"] = r.stored_bytes;
    d["tensor_bytes"] = r.tensor_bytes;
    d["tier"] = TierName(r.tier);
    d["replaced"] = r.replaced;
    return d;
  }

  py::array Get(const std::string& ns, const py::bytes& key, bool payload,
                uint64_t release_lease_id, uint32_t timeout_ms) {
    GetOptions g;
    g.format = payload ? DataFormat::kPayload : DataFormat::kTensor;
    g.release_lease_id = release_lease_id;
    const ChunkKey k = KeyFrom(key);
    GetResult r = Call([&](const CallOptions& c) { return client_->Get(ns, k, g, c); },
                       timeout_ms);
    if (payload) {
      py::array_t<uint8_t> out(static_cast<py::ssize_t>(r.data.size()));
      std::memcpy(out.mutable_data(), r.data.data(), r.data.size());
      return std::move(out);
    }
    py::array out(py::dtype(NumpyDtype(r.layout.dtype)), Shape(r.layout, r.num_tokens));
    if (static_cast<size_t>(out.nbytes()) != r.data.size()) {
      Raise(absl::InternalError("daemon returned a tensor whose size does not match its shape"));
    }
    std::memcpy(out.mutable_data(), r.data.data(), r.data.size());
    return out;
  }

  uint32_t Delete(const std::string& ns, const py::iterable& keys) {
    const auto k = KeysFrom(keys);
    return Call([&](const CallOptions& c) { return client_->Delete(ns, k, c); });
  }

  py::dict Stats() {
    const ServerStats s = Call([&](const CallOptions& c) { return client_->Stats(c); });
    py::dict d;
    d["version"] = s.version;
    d["namespaces"] = s.namespaces;
    d["pinned_chunks"] = s.pinned_chunks;
    d["active_leases"] = s.active_leases;
    d["lookup_tokens_requested"] = s.lookup_tokens_requested;
    d["lookup_tokens_hit"] = s.lookup_tokens_hit;
    d["ingest_tensor_bytes"] = s.ingest_tensor_bytes;
    d["ingest_payload_bytes"] = s.ingest_payload_bytes;
    d["gpu_tier"] = s.gpu_tier;
    py::list tiers;
    for (const auto& t : s.tiers) {
      py::dict td;
      td["tier"] = TierName(t.tier);
      td["capacity_bytes"] = t.capacity_bytes;
      td["used_bytes"] = t.used_bytes;
      td["chunks"] = t.chunks;
      td["hits"] = t.hits;
      td["misses"] = t.misses;
      td["evictions"] = t.evictions;
      tiers.append(td);
    }
    d["tiers"] = tiers;
    return d;
  }

  bool Healthy() { return Call([&](const CallOptions& c) { return client_->Healthy(c); }); }

  py::dict LastCall() const {
    std::lock_guard<std::mutex> lock(mu_);
    return StatsDict(last_);
  }

  py::dict Totals() const {
    const ClientTotals t = client_->Totals();
    py::dict d;
    d["calls"] = t.calls;
    d["failed_calls"] = t.failed_calls;
    d["retries"] = t.retries;
    d["bytes_sent"] = t.bytes_sent;
    d["bytes_received"] = t.bytes_received;
    return d;
  }

 private:
  // Runs fn without the GIL, records its stats, raises on error.
  template <typename Fn>
  auto Call(Fn&& fn, uint32_t timeout_ms = 0) ->
      typename std::invoke_result_t<Fn, const CallOptions&>::value_type {
    CallStats stats;
    CallOptions c;
    c.deadline = std::chrono::milliseconds(timeout_ms);
    c.stats = &stats;
    decltype(fn(c)) r = absl::UnknownError("not run");
    {
      py::gil_scoped_release nogil;
      r = fn(c);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_ = stats;
    }
    return Unwrap(std::move(r));
  }

  const NamespaceSpec& Remember(NamespaceSpec ns) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& slot = namespaces_[ns.name];
    slot = std::move(ns);
    return slot;
  }

  // The namespace's settings, from the cache unless `fresh`.
  const NamespaceSpec& Resolve(const std::string& name, bool fresh) {
    if (!fresh) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = namespaces_.find(name);
      if (it != namespaces_.end()) return it->second;
    }
    return Remember(Call([&](const CallOptions& c) { return client_->GetNamespace(name, c); }));
  }

  std::unique_ptr<Client> client_;
  mutable std::mutex mu_;
  CallStats last_;
  std::map<std::string, NamespaceSpec> namespaces_;  // node-based: references stay valid
};

}  // namespace
}  // namespace kvtier::client

PYBIND11_MODULE(_kvtier, m) {
  using kvtier::client::PyClient;
  m.doc() = "kvtier client SDK (C++ core); use the kvtier package";
  static py::exception<std::runtime_error> error(m, "Error");
  kvtier::client::g_error = error.ptr();

  py::class_<PyClient>(m, "Client")
      .def(py::init<const std::string&, const std::string&, bool, const std::string&,
                    const std::string&, uint32_t, uint32_t, uint32_t, uint64_t>(),
           py::arg("target"), py::arg("token") = "", py::arg("tls") = false,
           py::arg("ca_pem") = "", py::arg("server_name") = "", py::arg("timeout_ms") = 10000,
           py::arg("attempts") = 4, py::arg("connect_timeout_ms") = 5000,
           py::arg("shared_memory_bytes") = kvtier::client::ClientOptions().shared_memory_bytes)
      .def("create_namespace", &PyClient::CreateNamespace, py::arg("name"),
           py::arg("layers") = 0, py::arg("kv_heads") = 0, py::arg("head_dim") = 0,
           py::arg("q_heads") = 0, py::arg("dtype") = "fp16", py::arg("codec") = "raw",
           py::arg("tokens_per_chunk") = 0, py::arg("salt") = py::bytes(""),
           py::arg("model_id") = "", py::arg("mla") = false, py::arg("latent_dim") = 0,
           py::arg("rope_dim") = 0)
      .def("get_namespace", &PyClient::GetNamespace, py::arg("name"))
      .def("list_namespaces", &PyClient::ListNamespaces)
      .def("compute_keys", &PyClient::ComputeKeys, py::arg("namespace"), py::arg("tokens"),
           py::arg("include_partial_tail") = false)
      .def("lookup", &PyClient::Lookup, py::arg("namespace"), py::arg("keys"),
           py::arg("lease_ms") = 0, py::arg("timeout_ms") = 0)
      .def("_put", &PyClient::Put, py::arg("namespace"), py::arg("key"), py::arg("array"),
           py::arg("payload") = false, py::arg("first_position") = 0,
           py::arg("ends_sequence") = false, py::arg("pin") = false, py::arg("timeout_ms") = 0)
      .def("get", &PyClient::Get, py::arg("namespace"), py::arg("key"), py::arg("payload") = false,
           py::arg("release_lease_id") = 0, py::arg("timeout_ms") = 0)
      .def("delete", &PyClient::Delete, py::arg("namespace"), py::arg("keys"))
      .def("stats", &PyClient::Stats)
      .def("healthy", &PyClient::Healthy)
      .def("last_call", &PyClient::LastCall)
      .def("totals", &PyClient::Totals);
}
