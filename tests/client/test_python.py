"""The kvtier Python module against a real kvtierd started on a temporary Unix socket.

Run by ctest (client_python_test) with PYTHONPATH pointing at build/client/python and KVTIERD at
the daemon binary.
"""

import os
import subprocess
import time

import numpy as np
import pytest

import kvtier


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = tmp_path_factory.mktemp("kvtierd")
    sock = d / "kvtierd.sock"
    log = open(d / "kvtierd.log", "w")
    proc = subprocess.Popen(
        [os.environ["KVTIERD"],
         f"--service.data_dir={d / 'data'}",
         f"--server.unix_socket={sock}",
         "--server.tcp_address=127.0.0.1:0",
         "--metrics.address=127.0.0.1:0",
         "--storage.host.capacity_bytes=268435456",
         "--storage.disk.write_buffer_bytes=8388608",
         "--storage.disk.block_cache_bytes=8388608"],
        stdout=log, stderr=subprocess.STDOUT)
    target = f"unix:{sock}"
    deadline = time.time() + 30
    while True:
        try:
            c = kvtier.Client(target, connect_timeout_ms=500)
            if c.healthy():
                c.close()
                break
        except kvtier.Error:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError("kvtierd did not start:\n" + (d / "kvtierd.log").read_text())
        time.sleep(0.1)
    try:
        yield target
    finally:
        # Never leave a daemon behind, whatever happened to the tests.
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def client(daemon):
    with kvtier.Client(daemon) as c:
        yield c


def chunk(ns, tokens, seed):
    rng = np.random.default_rng(seed)
    shape = (ns["layers"], 2, ns["kv_heads"], tokens, ns["head_dim"])
    return rng.uniform(-2, 2, size=shape).astype(np.float16)


def test_namespaces(client):
    ns = client.create_namespace("py-ns", layers=2, kv_heads=2, head_dim=32, q_heads=8,
                                 tokens_per_chunk=16, salt=b"t", model_id="m")
    assert ns["tokens_per_chunk"] == 16
    assert ns["bytes_per_token"] == 2 * 2 * 2 * 32 * 2
    assert client.create_namespace("py-ns", layers=2, kv_heads=2, head_dim=32, q_heads=8,
                                   tokens_per_chunk=16, salt=b"t", model_id="m") == ns
    assert "py-ns" in [n["name"] for n in client.list_namespaces()]
    assert client.get_namespace("py-ns")["codec"] == "raw"
    with pytest.raises(kvtier.Error) as e:
        client.get_namespace("missing")
    assert e.value.code == "NOT_FOUND"


def test_lookup_put_get_roundtrip(client):
    ns = client.create_namespace("py-rt", layers=2, kv_heads=2, head_dim=32, tokens_per_chunk=16)
    tokens = np.arange(40, dtype=np.uint32) * 3
    keys = client.compute_keys("py-rt", tokens)
    assert len(keys) == 2 and all(isinstance(k, bytes) and len(k) == 32 for k in keys)
    assert keys == client.compute_keys("py-rt", list(tokens))  # lists work too
    assert client.lookup("py-rt", keys)["prefix_chunks"] == 0

    kv = [chunk(ns, 16, 1), chunk(ns, 16, 2)]
    for i, k in enumerate(keys):
        r = client.put("py-rt", k, kv[i], first_position=16 * i)
        assert r["tensor_bytes"] == kv[i].nbytes
    stats = client.last_call()
    assert stats["ok"] and stats["attempts"] == 1 and stats["bytes_sent"] == kv[1].nbytes

    hit = client.lookup("py-rt", keys, lease_ms=2000)
    assert hit["prefix_chunks"] == 2 and hit["prefix_tokens"] == 32
    assert len(hit["tiers"]) == 2
    got = client.get("py-rt", keys[0])
    assert got.dtype == np.float16 and got.shape == kv[0].shape
    np.testing.assert_array_equal(got, kv[0])
    assert client.last_call()["bytes_received"] == kv[0].nbytes

    payload = client.get("py-rt", keys[1], payload=True, release_lease_id=hit["lease_id"])
    assert payload.dtype == np.uint8 and payload[:4].tobytes() != b"\0\0\0\0"

    assert client.delete("py-rt", [keys[0]]) == 1
    assert client.lookup("py-rt", keys)["prefix_chunks"] == 0
    with pytest.raises(kvtier.Error) as e:
        client.get("py-rt", keys[0])
    assert e.value.code == "NOT_FOUND"


def test_payload_put_roundtrip(client):
    ns = client.create_namespace("py-payload", layers=1, kv_heads=1, head_dim=64,
                                 tokens_per_chunk=16)
    keys = client.compute_keys("py-payload", np.arange(32, dtype=np.uint32))
    kv = chunk(ns, 16, 5)
    client.put("py-payload", keys[0], kv)
    payload = client.get("py-payload", keys[0], payload=True)
    client.put("py-payload", keys[1], payload, payload=True)  # re-store the encoded bytes as is
    np.testing.assert_array_equal(client.get("py-payload", keys[1]), kv)


def test_shared_memory_off_gives_the_same_bytes(daemon, client):
    # The default client moves data through shared memory; one with it off uses the socket.
    ns = client.create_namespace("py-shm", layers=1, kv_heads=2, head_dim=64, tokens_per_chunk=16)
    keys = client.compute_keys("py-shm", np.arange(32, dtype=np.uint32))
    kv = [chunk(ns, 16, 7), chunk(ns, 16, 8)]
    client.put("py-shm", keys[0], kv[0])
    with kvtier.Client(daemon, shared_memory_bytes=0) as plain:
        plain.put("py-shm", keys[1], kv[1], first_position=16)
        np.testing.assert_array_equal(plain.get("py-shm", keys[0]), kv[0])
    np.testing.assert_array_equal(client.get("py-shm", keys[1]), kv[1])


def test_rejects_wrong_arrays(client):
    ns = client.create_namespace("py-bad", layers=2, kv_heads=2, head_dim=32, tokens_per_chunk=16)
    key = client.compute_keys("py-bad", np.arange(16, dtype=np.uint32))[0]
    with pytest.raises(ValueError, match="dtype"):
        client.put("py-bad", key, chunk(ns, 16, 0).astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        client.put("py-bad", key, np.zeros((2, 2, 3, 16, 32), np.float16))
    with pytest.raises(kvtier.Error):
        client.lookup("py-bad", [b"short"])


def test_async_futures(client):
    ns = client.create_namespace("py-async", layers=2, kv_heads=1, head_dim=64, tokens_per_chunk=16)
    keys = client.compute_keys("py-async", np.arange(16 * 6, dtype=np.uint32))
    kv = [chunk(ns, 16, 10 + i) for i in range(len(keys))]
    for f in [client.put_async("py-async", k, v) for k, v in zip(keys, kv)]:
        f.result(timeout=30)
    assert client.lookup_async("py-async", keys).result()["prefix_chunks"] == 6
    futures = [client.get_async("py-async", k) for k in keys]
    for f, v in zip(futures, kv):
        np.testing.assert_array_equal(f.result(timeout=30), v)


def test_dlpack_producers_are_accepted(client):
    ns = client.create_namespace("py-dlpack", layers=1, kv_heads=1, head_dim=32, tokens_per_chunk=16)
    key = client.compute_keys("py-dlpack", np.arange(16, dtype=np.uint32))[0]
    kv = chunk(ns, 16, 3)

    class Producer:  # any object exposing the DLPack protocol, as a torch tensor does
        def __init__(self, a):
            self._a = a

        def __dlpack__(self, stream=None):
            return self._a.__dlpack__()

        def __dlpack_device__(self):
            return self._a.__dlpack_device__()

    client.put("py-dlpack", key, Producer(kv))
    np.testing.assert_array_equal(client.get("py-dlpack", key), kv)
    torch = pytest.importorskip("torch") if os.environ.get("KVTIER_TEST_TORCH") else None
    if torch is not None:
        t = torch.from_numpy(kv.astype(np.float32)).half()
        client.put("py-dlpack", key, t)
        np.testing.assert_array_equal(client.get("py-dlpack", key), kv)


def test_stats_and_errors(daemon, client):
    s = client.stats()
    assert s["namespaces"] >= 1 and isinstance(s["tiers"], list) and s["version"]
    assert client.healthy()
    assert client.totals()["calls"] == 2  # this fresh client made exactly two calls
    with pytest.raises(kvtier.Error) as e:
        kvtier.Client(daemon + ".nothing", connect_timeout_ms=200)
    assert e.value.code == "UNAVAILABLE" and "is it running" in e.value.message
