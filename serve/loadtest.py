"""A bounded load generator for ``python -m serve http``: fixed clients, fixed duration, this machine only.

    python -m serve.loadtest --url http://127.0.0.1:8000 --clients 64 --seconds 60 \\
        --input test_2016_flickr.en [--beam 5] [--compare-offline models/en-de/onnx]

Each client sends one sentence per request, cycling through the input, and waits for the answer before the next;
the run stops by itself after --seconds. Reports requests/s, sentences/s, latency percentiles, errors by status and
the server's resident memory before and after (from /health). --compare-offline first measures the same bundle
in this process, with the server idle: throughput of ``translate`` at batch 32 and its batch-1 latency, so the
report can say what batching and HTTP add or cost. --warmup seconds of the same load run first and are not counted.
The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlparse

SAMPLE = [
    "A man in an orange hat starring at something.",
    "Two young children are playing in the sand on a sunny beach.",
    "A dog runs through the snow.",
    "A group of people stand in front of an igloo.",
    "A woman in a red jacket takes a picture of them.",
    "A little girl is climbing into a wooden playhouse.",
    "Two men are playing chess in a park.",
    "A boy jumps off a diving board into a pool.",
]


def is_own_address(address: str) -> bool:
    """True for loopback and for an address of this host (or network namespace): one it can bind to."""
    address = address.split("%")[0]
    if ipaddress.ip_address(address).is_loopback:
        return True
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def require_loopback(url: str) -> None:
    """Refuse any target that is not this machine (or this network namespace): a load test never leaves it."""
    host = urlparse(url).hostname or ""
    addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    if not addresses or not all(is_own_address(a) for a in addresses):
        raise SystemExit(f"error: {url} is not an address of this machine; this load generator only targets it")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's default); NaN if empty.

    The project's one definition: ``bench`` uses it too, and ``serve/js/timing.mjs`` computes the same.
    """
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def run_load(url: str, sentences: list[str], clients: int, seconds: float, parameters: dict) -> dict:
    import httpx

    latencies, statuses, started = [], Counter(), time.perf_counter()
    deadline = started + seconds
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30.0),
                                 limits=httpx.Limits(max_connections=clients)) as client:
        before = (await client.get("/health")).json()

        async def one_client(index: int) -> None:
            position = index
            while time.perf_counter() < deadline:
                body = {"inputs": sentences[position % len(sentences)], "parameters": parameters}
                position += clients
                sent = time.perf_counter()
                try:
                    response = await client.post("/translate", json=body)
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - sent)
                except httpx.HTTPError as error:
                    statuses[type(error).__name__] += 1

        await asyncio.gather(*(one_client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
        after = (await client.get("/health")).json()
    ok = statuses.get(200, 0)
    return {
        "clients": clients, "seconds": round(elapsed, 1), "requests": sum(statuses.values()),
        "errors": {str(k): v for k, v in statuses.items() if k != 200},
        "requests_per_s": round(ok / elapsed, 1), "sentences_per_s": round(ok / elapsed, 1),
        "latency_ms": {q: round(1000 * percentile(latencies, int(q[1:])), 1) for q in ("p50", "p95", "p99")},
        "server_rss_mb": {"before": round(before["rss_bytes"] / 2**20, 1), "after": round(after["rss_bytes"] / 2**20, 1)},
    }


def measure_offline(bundle: str, sentences: list[str], options: dict) -> dict:
    """The same bundle in this process: sentences/s at batch 32, and batch-1 latency."""
    from .translator import Translator

    translator = Translator(bundle)
    translator.translate(sentences[:8], **options)  # warm-up
    started = time.perf_counter()
    translator.translate(sentences, batch_size=32, **options)
    batch_throughput = len(sentences) / (time.perf_counter() - started)
    single = []
    for sentence in sentences[:64]:
        started = time.perf_counter()
        translator.translate([sentence], **options)
        single.append(time.perf_counter() - started)
    return {"batch32_sentences_per_s": round(batch_throughput, 1),
            "batch1_latency_ms": {"p50": round(1000 * percentile(single, 50), 1),
                                  "p95": round(1000 * percentile(single, 95), 1)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="server base URL on this machine, e.g. http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds of the same load first, not counted, so RSS 'before' is a warm server's")
    parser.add_argument("--input", help="sentences, one per line (default: a few built-in ones)")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--src-lang")
    parser.add_argument("--tgt-lang")
    parser.add_argument("--compare-offline", metavar="BUNDLE", help="also measure this bundle directly")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 1024 or not 0 < args.seconds <= 3600 or not 0 <= args.warmup <= 600:
        parser.error("--clients must be 1..1024, --seconds 0..3600 and --warmup 0..600")
    require_loopback(args.url)
    if args.input:
        from core.data import read_lines

        sentences = [line for line in read_lines(args.input) if line.strip()]
    else:
        sentences = SAMPLE
    parameters = {"generate_parameters": {"num_beams": args.beam}}
    if args.src_lang:
        parameters.update(src_lang=args.src_lang, tgt_lang=args.tgt_lang)

    report = {"url": args.url, "beam": args.beam, "distinct_sentences": len(sentences)}
    if args.compare_offline:
        report["offline"] = measure_offline(args.compare_offline, sentences[:512], {"beam_size": args.beam})
    if args.warmup:
        report["warmup"] = asyncio.run(run_load(args.url, sentences, args.clients, args.warmup, parameters))
    report["load"] = asyncio.run(run_load(args.url, sentences, args.clients, args.seconds, parameters))
    load = report["load"]
    print(f"{load['clients']} clients x {load['seconds']} s: {load['requests']} requests, errors {load['errors'] or 0}, "
          f"{load['sentences_per_s']} sentences/s, latency p50/p95/p99 {load['latency_ms']['p50']}/"
          f"{load['latency_ms']['p95']}/{load['latency_ms']['p99']} ms, server RSS "
          f"{load['server_rss_mb']['before']} -> {load['server_rss_mb']['after']} MB", file=sys.stderr)
    if "offline" in report:
        offline = report["offline"]
        report["http_vs_offline_batch32"] = round(load["sentences_per_s"] / offline["batch32_sentences_per_s"], 3)
        print(f"offline translate: {offline['batch32_sentences_per_s']} sentences/s at batch 32, batch-1 p50 "
              f"{offline['batch1_latency_ms']['p50']} ms; HTTP / offline throughput "
              f"{report['http_vs_offline_batch32']}", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
