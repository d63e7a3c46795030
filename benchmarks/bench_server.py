"""Load on `qwen3-rag serve`: 1, 8, 32 and 64 concurrent clients sending single-text embedding requests, against
in-process `Embedder.embed_documents` on the same texts, side by side in one run.

The server runs all-MiniLM-L6-v2 on the CPU in its own process (`qwen3-rag serve --model MINILM --device cpu`),
on a free loopback port. Each client keeps one HTTP/1.1 connection and sends one text per request
(`{"input": text, "encoding_format": "base64"}`, as the openai package sends it) as soon as its previous answer
came; the client is plain asyncio on raw sockets so it takes as little of the shared CPU as it can. The texts are
SciFact's queries (the short texts a chatbot sends). Each round runs the in-process baseline, 64 clients, the
baseline again (the fraction at 64 clients is taken against the mean of the two), then 1, 8 and 32 clients; every
answer is checked against the in-process vectors after its level.

    python benchmarks/bench_server.py --out benchmarks/results/server-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CONCURRENCY = (1, 8, 32, 64)
REQUESTS = 640  # per level: 10 per client at 64 clients
ROUNDS = 3
LEVEL_TIMEOUT = 300.0  # seconds; a level that takes longer is reported as such


def start_server(model: str, port: int, batch_wait_ms: float) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "qwen3_rag", "serve", "--model", model, "--device", "cpu",
                             "--port", str(port), "--batch-wait-ms", str(batch_wait_ms)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """One request on a kept-alive connection: the status and the body."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


def request_bytes(port: int, path: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def wait_ready(port: int, proc: subprocess.Popen[str], limit: float = 300.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /ready HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
            if head[9:12] == b"200":
                return
        except OSError:
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError("the server did not get ready")


async def load_level(port: int, texts: list[str], clients: int) -> dict:
    """``len(texts)`` requests from ``clients`` concurrent clients; latencies and answers in request order."""
    requests = [request_bytes(port, "/v1/embeddings", {"input": t, "encoding_format": "base64"}) for t in texts]
    latencies = [0.0] * len(texts)
    answers: list[bytes] = [b""] * len(texts)
    next_index = 0

    async def client() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < len(requests):
                i = next_index
                next_index += 1
                t0 = time.perf_counter()
                status, body = await http(reader, writer, requests[i])
                latencies[i] = time.perf_counter() - t0
                if status != 200:
                    raise RuntimeError(f"request {i} answered {status}: {body[:200]!r}")
                answers[i] = body
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), LEVEL_TIMEOUT)
    wall = time.perf_counter() - t0
    return {"wall": wall, "latencies": latencies, "answers": answers}


def check(answers: list[bytes], expected: np.ndarray) -> float:
    """The largest difference between the served vectors and the in-process ones."""
    got = np.stack([np.frombuffer(base64.b64decode(json.loads(a)["data"][0]["embedding"]), dtype="<f4")
                    for a in answers])
    return float(np.abs(got - expected).max())


async def batch_stats(port: int) -> tuple[float, float]:
    """(model calls, texts) so far, from the server's /metrics."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    _, body = await http(reader, writer, f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    writer.close()
    calls = texts = 0.0
    for line in body.decode().splitlines():
        if line.startswith("qwen3_rag_batch_size_count{"):
            calls += float(line.rsplit(" ", 1)[1])
        elif line.startswith("qwen3_rag_batch_size_sum{"):
            texts += float(line.rsplit(" ", 1)[1])
    return calls, texts


def in_process(embedder, texts: list[str]) -> float:
    """Texts per second of ``embedder.embed_documents`` on all of ``texts`` in one call."""
    t0 = time.perf_counter()
    embedder.embed_documents(texts)
    return len(texts) / (time.perf_counter() - t0)


async def server_level(port: int, texts: list[str], clients: int, expected: np.ndarray, round_no: int) -> dict:
    calls0, texts0 = await batch_stats(port)
    result = await load_level(port, texts, clients)
    calls1, texts1 = await batch_stats(port)
    lat = np.array(result["latencies"]) * 1000
    return {"round": round_no, "config": "server", "clients": clients, "req_s": len(texts) / result["wall"],
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "mean_batch": (texts1 - texts0) / max(calls1 - calls0, 1), "max_diff": check(result["answers"], expected)}


async def run(args: argparse.Namespace) -> dict:
    from qwen3_rag import Embedder

    _, queries = C.scifact_texts(n_docs=1, n_queries=None)
    texts = (queries * (REQUESTS // len(queries) + 1))[:REQUESTS]
    model = C.minilm_path()
    embedder = Embedder(model, device="cpu", dtype="float32")
    expected = embedder.embed_documents(texts)  # also loads the weights before any timing
    port = args.port
    proc = start_server(model, port, args.batch_wait_ms)
    rows, rounds = [], []
    try:
        await wait_ready(port, proc)
        await load_level(port, texts[:64], 8)  # warm-up: the server's first calls
        for round_no in range(1, ROUNDS + 1):
            load_before = os.getloadavg()
            # 64 clients between two in-process runs, so that the ratio compares like with like on a shared CPU
            before = in_process(embedder, texts)
            level_rows = {64: await server_level(port, texts, 64, expected, round_no)}
            after = in_process(embedder, texts)
            inproc = (before + after) / 2
            rows.append({"round": round_no, "config": "in-process embed_documents (before / after 64)",
                         "clients": "-", "req_s": inproc, "note": f"{before:.0f} / {after:.0f}"})
            rows.append(level_rows[64])
            for clients in (c for c in CONCURRENCY if c != 64):
                level_rows[clients] = await server_level(port, texts, clients, expected, round_no)
                rows.append(level_rows[clients])
            rounds.append({"round": round_no, "load_before": load_before, "load_after": os.getloadavg(),
                           "in_process_texts_s": inproc, "fraction_at_64": level_rows[64]["req_s"] / inproc})
    finally:
        proc.terminate()
        proc.wait(60)
    return {"rows": rows, "rounds": rounds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8917)
    ap.add_argument("--batch-wait-ms", type=float, default=2.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    info = C.machine()
    info["uptime_before"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results = asyncio.run(run(args))
    info["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(info, indent=1))
    C.print_table(results["rows"], ["round", "config", "clients", "req_s", "p50_ms", "p99_ms", "mean_batch",
                                    "max_diff", "note"])
    fractions = sorted(r["fraction_at_64"] for r in results["rounds"])
    results["median_fraction_at_64"] = fractions[len(fractions) // 2]
    print(f"median over rounds: server at 64 clients = {results['median_fraction_at_64']:.2f} x in-process")
    for r in results["rounds"]:
        print(f"round {r['round']}: server at 64 clients = {r['fraction_at_64']:.2f} x in-process "
              f"({r['in_process_texts_s']:.0f} texts/s); load {r['load_before']} -> {r['load_after']}")
    if args.out:
        C.write_results(args.out, machine=info, requests_per_level=REQUESTS, batch_wait_ms=args.batch_wait_ms,
                        **results)


if __name__ == "__main__":
    main()
