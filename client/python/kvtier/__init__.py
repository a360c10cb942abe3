"""kvtier: Python client of the kvtierd KV-cache service.

The C++ SDK does the work (gRPC, chained chunk keys, deadlines, retries on UNAVAILABLE); this
package adds NumPy/DLPack input handling and futures. Tensors are C-ordered arrays in the
namespace's canonical chunk layout:

    MHA/GQA: (layers, 2, kv_heads, tokens, head_dim)     MLA: (layers, tokens, latent + rope)

with dtype float16, float32, or uint16 holding bfloat16 bits. Any object with ``__dlpack__`` (a
torch tensor, say) is accepted wherever an array is; it is brought to host memory first.

    import kvtier, numpy as np
    c = kvtier.Client("unix:/run/kvtier/kvtierd.sock")
    ns = c.create_namespace("llama8b", layers=32, kv_heads=8, head_dim=128, q_heads=32)
    keys = c.compute_keys("llama8b", np.arange(1024, dtype=np.uint32))
    hit = c.lookup("llama8b", keys)            # {'prefix_chunks': ..., 'prefix_tokens': ...}
    c.put("llama8b", keys[0], kv_chunk)         # kv_chunk: (32, 2, 8, 256, 128) float16
    kv = c.get("llama8b", keys[0])              # numpy array, same shape

Errors raise kvtier.Error; ``e.code`` is the status name ("NOT_FOUND", "UNAVAILABLE", ...).
"""

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ._kvtier import Client as _Client
from ._kvtier import Error

__all__ = ["Client", "Error", "as_numpy"]

Error.code = property(lambda self: self.args[0] if self.args else "UNKNOWN")
Error.message = property(lambda self: self.args[1] if len(self.args) > 1 else "")


def as_numpy(array):
    """A C-contiguous host NumPy view or copy of `array` (NumPy array or any DLPack producer)."""
    if isinstance(array, np.ndarray):
        return np.ascontiguousarray(array)
    if hasattr(array, "__dlpack__"):
        device = getattr(array, "device", None)
        if device is not None and getattr(device, "type", "cpu") != "cpu":
            array = array.cpu()  # torch: bring device tensors to the host
        if str(getattr(array, "dtype", "")) == "torch.bfloat16":
            import torch  # only reachable when torch is installed

            return np.from_dlpack(array.contiguous().view(torch.int16)).view(np.uint16)
        return np.ascontiguousarray(np.from_dlpack(array))
    return np.ascontiguousarray(np.asarray(array))


class Client(_Client):
    """A connection to kvtierd. Thread-safe; calls release the GIL while they wait.

    Client(target, token="", tls=False, ca_pem="", server_name="", timeout_ms=10000,
           attempts=4, connect_timeout_ms=5000)

    target: "unix:/path/to/kvtierd.sock" or "host:port". timeout_ms is the default deadline of each
    call (all attempts); attempts bounds retries, which happen on UNAVAILABLE only.
    """

    def __init__(self, target, **kwargs):
        super().__init__(target, **kwargs)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kvtier")

    def put(self, namespace, key, array, *, payload=False, first_position=0, ends_sequence=False,
            pin=False, timeout_ms=0):
        """Stores one chunk. `array` is a tensor in the namespace layout, or (payload=True) an
        encoded kvtier payload as a uint8 array. Returns {'stored_bytes', 'tensor_bytes', 'tier',
        'replaced'}."""
        data = as_numpy(array)
        if payload:
            data = data.view(np.uint8).reshape(-1)
        return self._put(namespace, key, data, payload=payload, first_position=first_position,
                         ends_sequence=ends_sequence, pin=pin, timeout_ms=timeout_ms)

    def put_async(self, namespace, key, array, **kwargs) -> Future:
        data = as_numpy(array)  # converted now, so the caller may reuse its tensor
        return self._pool.submit(self.put, namespace, key, data, **kwargs)

    def get_async(self, namespace, key, **kwargs) -> Future:
        return self._pool.submit(self.get, namespace, key, **kwargs)

    def lookup_async(self, namespace, keys, **kwargs) -> Future:
        return self._pool.submit(self.lookup, namespace, list(keys), **kwargs)

    def close(self):
        self._pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
