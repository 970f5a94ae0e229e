"""The app as a Ray Serve deployment on a local Ray instance: two CPU replicas answer like the
model itself; one replica killed mid-load leaves every request answered or failed cleanly
(an HTTP error), none hanging, and the other replica serving."""
import socket
import threading
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
import cupyprune  # noqa: E402
from serve_helpers import DIGITS, ROOT, digits_config, images, json_body, logits_of  # noqa: E402

TIMEOUT_S = 60
CLIENTS, REQUESTS = 6, 30


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_serve():
    """A local Ray (the replicas import this checkout) serving the digits model on 2 CPU
    replicas -> base URL; Serve and Ray shut down afterwards."""
    from ray import serve
    from cupyprune.serve.ray import run_on_ray
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": ROOT, "CUPYPRUNE_DEVICE": "cpu"}})
    try:
        port = _free_port()
        url = run_on_ray(digits_config(max_delay_ms=2.0), host="127.0.0.1", port=port,
                         replicas=2)
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                if httpx.get(url + "/v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Ray Serve never became ready"
            time.sleep(0.2)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def _replicas():
    return [a for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::")]


@pytest.mark.slow
def test_two_replicas_answer_like_the_model(ray_serve, rng):
    assert len(_replicas()) == 2
    reference = cupyprune.load(DIGITS, device="cpu")
    with httpx.Client(base_url=ray_serve, timeout=TIMEOUT_S) as client:
        meta = client.get("/v2/models/digits").json()
        assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8]
        for _ in range(10):
            x = images(rng, int(rng.integers(1, 5)))
            r = client.post("/v2/models/digits/infer", content=json_body(x))
            assert r.status_code == 200, r.text
            ref = reference(x)
            np.testing.assert_allclose(logits_of(r), ref, rtol=1e-5,
                                       atol=1e-5 * np.abs(ref).max())
        assert "cupyprune_requests_total" in client.get("/metrics").text


@pytest.mark.slow
def test_a_replica_killed_mid_load(ray_serve, rng):
    reference = cupyprune.load(DIGITS, device="cpu")
    results, answered = [], threading.Semaphore(0)
    lock = threading.Lock()

    def client_run(seed):
        local = np.random.default_rng(seed)
        with httpx.Client(base_url=ray_serve, timeout=TIMEOUT_S) as client:
            for _ in range(REQUESTS):
                x = images(local, 2)
                try:
                    r = client.post("/v2/models/digits/infer", content=json_body(x))
                    outcome = (x, r.status_code, r)
                except httpx.TimeoutException:
                    outcome = (x, "timeout", None)
                except httpx.HTTPError as e:          # the connection dropped: a clean failure
                    outcome = (x, type(e).__name__, None)
                with lock:
                    results.append(outcome)
                answered.release()

    threads = [threading.Thread(target=client_run, args=(int(rng.integers(2**31)),))
               for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for _ in range(CLIENTS * REQUESTS // 3):          # a third of the load answered, then kill
        assert answered.acquire(timeout=TIMEOUT_S), "requests stopped being answered"
    victim = _replicas()[0]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    for t in threads:
        t.join(TIMEOUT_S * 2)
    assert not any(t.is_alive() for t in threads), "a client hangs"
    assert len(results) == CLIENTS * REQUESTS
    assert not [code for _, code, _ in results if code == "timeout"], "a request hung"
    ok = [(x, r) for x, code, r in results if code == 200]
    failed = [code for _, code, _ in results if code != 200]
    assert all(not isinstance(code, int) or code >= 500 for code in failed), failed
    print(f"killed {victim['name']}: {len(ok)} answered, {len(failed)} failed cleanly "
          f"({sorted(set(map(str, failed)))})")
    assert len(ok) >= CLIENTS * REQUESTS // 2
    for x, r in ok:
        ref = reference(x)
        np.testing.assert_allclose(logits_of(r), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    with httpx.Client(base_url=ray_serve, timeout=TIMEOUT_S) as client:   # still serving
        x = images(rng, 1)
        assert client.post("/v2/models/digits/infer", content=json_body(x)).status_code == 200
