"""serve.cluster on a real two-node Ray cluster: each node in its own network namespace, joined by a veth pair.

Ray binds its ports to every interface, so nothing runs in the host's namespace: the head, the worker, the deploy
command and every HTTP client run inside the namespaces and talk over their own link-local addresses. Every process
is stopped by PID (all the PIDs of each namespace), temp and home folders live in the test's own folder, usage
stats and the dashboard are off. Needs root (ip netns) and Ray (the `cluster` extra).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="needs Ray Serve (the cluster extra)")

from conftest import ROOT  # noqa: E402
from serve import Translator  # noqa: E402
from serve.cluster import PROXY_ENV  # noqa: E402

HEAD_IP, WORKER_IP = "169.254.77.1", "169.254.77.2"  # link-local, inside this test's namespaces only
GCS = f"{HEAD_IP}:6379"
SENTENCES = {"en-de": ["A dog runs.", "Two young children are playing with a red ball on the grass.",
                       "A man in a blue jacket is riding his bicycle down a busy street."],
             "de-en": ["Ein Hund rennt.", "Eine Frau mit Sonnenbrille sitzt auf einer Bank im Park."]}
PAIRS = {"en-de": ("en", "de"), "de-en": ("de", "en")}


class Node:
    """One Ray node (`ray start --block`) in its own network namespace."""

    def __init__(self, namespace: str, folder: Path):
        self.namespace, self.folder = namespace, folder
        self.process = None
        (folder / "home").mkdir(parents=True, exist_ok=True)

    def env(self) -> dict:  # PROXY_ENV: the documented topology, any proxy routes to every node's replica
        return {**os.environ, **PROXY_ENV, "HOME": str(self.folder / "home"), "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONPATH": str(ROOT), "RAY_ADDRESS": GCS}

    def run(self, *command, timeout=120, check=True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.namespace, *command], cwd=ROOT, env=self.env(),
                              capture_output=True, text=True, timeout=timeout, check=check)

    def python(self, code: str, timeout=120) -> str:
        return self.run(sys.executable, "-c", code, timeout=timeout).stdout

    def start(self, *ray_arguments):
        """Start the node and wait until this start (not an earlier one) says it is up."""
        ray = str(Path(sys.executable).parent / "ray")
        self.starts = getattr(self, "starts", 0) + 1
        log_path = self.folder / f"ray-{self.starts}.log"
        log = log_path.open("w")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, ray, "start", "--block", "--num-cpus", "1", "--disable-usage-stats",
             "--temp-dir", str(self.folder / "ray"), *ray_arguments], cwd=ROOT, env=self.env(), stdout=log,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while "block forever" not in log_path.read_text():
            assert self.process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "ray start did not finish in 90 s"
            time.sleep(0.5)

    def kill(self, sig=signal.SIGKILL):
        """Every process of the namespace, by PID (the node and all it started)."""
        listed = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True).stdout
        for pid in (int(p) for p in listed.split()):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if self.process is not None:
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="module")
def cluster():
    if getattr(os, "geteuid", lambda: -1)() != 0 or not shutil.which("ip"):
        pytest.skip("the two-node test creates network namespaces: it needs root and iproute2 (CI runs it as root)")
    folder = Path(tempfile.mkdtemp(prefix="amt-ray-", dir="/tmp"))  # short: Ray's socket paths must stay short
    tag = str(os.getpid() % 100000)
    head, worker = Node(f"amt{tag}h", folder / "head"), Node(f"amt{tag}w", folder / "worker")
    link_head, link_worker = f"vh{tag}", f"vw{tag}"
    setup = [["ip", "netns", "add", head.namespace], ["ip", "netns", "add", worker.namespace],
             ["ip", "link", "add", link_head, "type", "veth", "peer", "name", link_worker],
             ["ip", "link", "set", link_head, "netns", head.namespace],
             ["ip", "link", "set", link_worker, "netns", worker.namespace],
             ["ip", "-n", head.namespace, "addr", "add", f"{HEAD_IP}/24", "dev", link_head],
             ["ip", "-n", worker.namespace, "addr", "add", f"{WORKER_IP}/24", "dev", link_worker]]
    for namespace, link in ((head.namespace, link_head), (worker.namespace, link_worker)):
        setup += [["ip", "-n", namespace, "link", "set", "lo", "up"], ["ip", "-n", namespace, "link", "set", link, "up"]]
    try:
        for command in setup:
            subprocess.run(command, check=True, capture_output=True)
        head.start("--head", "--node-ip-address", HEAD_IP, "--port", "6379", "--include-dashboard", "false")
        worker.start("--address", GCS, "--node-ip-address", WORKER_IP)
        deploy(head, "serve/cluster.yaml")
        assert wait_for_replicas(head, 2, 120) < 120
        yield head, worker
    finally:
        for node in (worker, head):
            node.kill(signal.SIGTERM)
            node.kill(signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", node.namespace], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def deploy(head: "Node", config: str) -> None:
    done = head.run(str(Path(sys.executable).parent / "serve"), "run", config, "--non-blocking")
    assert "Submitted deploy config successfully" in done.stdout + done.stderr, done.stderr[-3000:]


STATUS = """
import json, ray
from ray import serve
ray.init(logging_level="ERROR", log_to_driver=False)
application = serve.status().applications.get("default")
deployment = application.deployments.get("translation") if application else None  # absent while it deploys
states = deployment.replica_states if deployment else {}
print(json.dumps({"status": str(application.status) if application else None, "running": states.get("RUNNING", 0),
                  "alive_nodes": sum(node["Alive"] for node in ray.nodes())}))
"""


def json_reply(stdout: str):
    """The last JSON line a probe printed: Ray may print its own warnings (lagging heartbeats...) after it."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                pass
    raise AssertionError(f"no JSON line in: {stdout[-1000:]}")


def wait_for_replicas(head: Node, count: int, seconds: float) -> float:
    """Seconds until the app runs with exactly `count` replicas (fails after `seconds`)."""
    started = time.monotonic()
    while True:
        done = head.run(sys.executable, "-c", STATUS, check=False)  # a busy head may refuse a probe: ask again
        try:
            state = json_reply(done.stdout) if done.returncode == 0 else {"probe failed": done.stderr[-500:]}
        except AssertionError as no_reply:
            state = {"probe failed": str(no_reply)}
        if state.get("running", 0) == count and state.get("status") == "ApplicationStatus.RUNNING":
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"only {state} after {seconds} s"
        time.sleep(1)


def test_both_nodes_serve_the_same_translations_as_the_translator(cluster):
    head, _ = cluster
    answers = json_reply(head.python(f"""
import json, httpx
out = {{}}
for host in ("{HEAD_IP}", "{WORKER_IP}"):  # each node's proxy
    for pair, (src, tgt) in {PAIRS!r}.items():
        response = httpx.post(f"http://{{host}}:8000/translate", timeout=30,
                              json={{"inputs": {SENTENCES!r}[pair], "parameters": {{"src_lang": src, "tgt_lang": tgt}}}})
        out[f"{{host}} {{pair}}"] = [response.status_code, [item["translation_text"] for item in response.json()]]
bad = httpx.post(f"http://{HEAD_IP}:8000/translate", json={{"inputs": []}}, timeout=30)
out["refused"] = [bad.status_code, bad.json()]
print(json.dumps(out))
"""))
    for pair, texts in SENTENCES.items():
        expected = [t.text for t in Translator(ROOT / "models" / pair / "onnx").translate(texts)]
        for host in (HEAD_IP, WORKER_IP):
            assert answers[f"{host} {pair}"] == [200, expected]
    assert answers["refused"] == [422, {"error": "inputs: must not be an empty list", "error_type": "validation",
                                        "field": "inputs"}]


LOAD = """
import asyncio, json, sys, time, httpx
clients, seconds, per_request = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
log = []
async def client(http, started):
    while time.monotonic() - started < seconds:
        sent = time.monotonic()
        try:
            response = await http.post("/translate", json={"inputs": ["A dog runs through the snow."] * per_request,
                                       "parameters": {"src_lang": "en", "tgt_lang": "de"}})
            ok, node = response.status_code == 200, response.headers.get("x-served-by")
        except httpx.HTTPError:
            ok, node = False, None
        log.append((round(sent - started, 3), round(time.monotonic() - sent, 3), ok, node))
async def main():
    started = time.monotonic()
    async with httpx.AsyncClient(base_url="http://%s:8000", timeout=30) as http:
        await asyncio.gather(*(client(http, started) for _ in range(clients)))
asyncio.run(main())
print(json.dumps(log))
""" % HEAD_IP


def run_load(head: "Node", clients: int, seconds: float, per_request: int) -> list:
    """The bounded load above, through the head's proxy (the one entry): one row per request."""
    done = head.run(sys.executable, "-c", LOAD, str(clients), str(seconds), str(per_request), timeout=seconds + 120)
    return json_reply(done.stdout)


def test_one_entry_reaches_both_nodes_and_two_nodes_outserve_one(cluster, tmp_path):
    """Load through the head's proxy alone: each node's replica serves a fair share; then the same load with one
    replica (the deployment scaled to 1, then back to 2) for the two-node against one-node throughput. Requests of
    8 sentences, so that the search, not the proxies and the load generator that share these two cores, is what
    the replicas add."""
    head, _ = cluster
    two = run_load(head, 8, 20, 8)
    shares = {node: sum(1 for row in two if row[2] and row[3] == node) / len(two) for node in (HEAD_IP, WORKER_IP)}
    single = tmp_path / "one-replica.yaml"
    single.write_text((ROOT / "serve" / "cluster.yaml").read_text().replace("num_replicas: 2", "num_replicas: 1"))
    deploy(head, str(single))
    wait_for_replicas(head, 1, 120)
    one = run_load(head, 8, 20, 8)
    deploy(head, "serve/cluster.yaml")
    wait_for_replicas(head, 2, 120)
    figures = {"two_replicas_sentences_per_s": round(8 * sum(row[2] for row in two) / 20, 1),
               "one_replica_sentences_per_s": round(8 * sum(row[2] for row in one) / 20, 1),
               "shares": {node: round(share, 3) for node, share in shares.items()},
               "p50_ms_two": round(1000 * sorted(row[1] for row in two)[len(two) // 2]),
               "p50_ms_one": round(1000 * sorted(row[1] for row in one)[len(one) // 2])}
    figures["ratio"] = round(figures["two_replicas_sentences_per_s"] / figures["one_replica_sentences_per_s"], 2)
    print("cluster scale-out test:", json.dumps(figures))
    assert all(share >= 0.30 for share in shares.values()), figures  # the bar: each node >= 30%
    assert all(row[2] for row in two + one), figures


def test_a_lost_worker_node_costs_few_requests_and_capacity_returns(cluster, tmp_path):
    """Bounded load on the head's proxy; the worker node is killed (SIGKILL, all its processes) after 8 s and
    started again after 14 s. Records the failed requests, whether the head kept answering, and the time until
    both replicas run again."""
    head, worker = cluster
    load = subprocess.Popen(["ip", "netns", "exec", head.namespace, sys.executable, "-c", LOAD, "8", "50", "1"], cwd=ROOT,
                            env=head.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(8)
        killed = time.monotonic()
        worker.kill(signal.SIGKILL)
        time.sleep(6)
        worker.start("--address", GCS, "--node-ip-address", WORKER_IP)
        wait_for_replicas(head, 2, 90)
        recovery_seconds = round(time.monotonic() - killed, 1)  # from the kill, the node's restart included
        output, _ = load.communicate(timeout=120)
    finally:
        if load.poll() is None:
            load.kill()
    log = json_reply(output)
    failed = [entry for entry in log if not entry[2]]
    after_kill = [entry for entry in log if 8.5 <= entry[0] <= 14]
    figures = {"requests": len(log), "failed": len(failed), "failed_at_s": [entry[0] for entry in failed][:20],
               "served_by_the_worker_before_the_kill": sum(1 for e in log if e[0] < 8 and e[2] and e[3] == WORKER_IP),
               "served_by_the_worker_after_its_restart": sum(1 for e in log if e[0] > 14 and e[2] and e[3] == WORKER_IP),
               "answered_while_worker_down": sum(entry[2] for entry in after_kill),
               "seconds_until_two_replicas_again": recovery_seconds}
    (tmp_path / "failure.json").write_text(json.dumps(figures))
    print("cluster failure test:", json.dumps(figures))
    assert figures["served_by_the_worker_before_the_kill"] > 0, figures  # the killed node carried load
    assert figures["answered_while_worker_down"] > 0, figures  # the head kept answering
    assert len(failed) <= 0.05 * len(log), figures
    assert recovery_seconds < 100
