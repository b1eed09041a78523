"""Serving load test: micro-batched mixed-adapter serving against one request at a time, on 127.0.0.1 only.

    .venv/bin/python bench/bench_serve.py                    # builtin:tiny-t5, 4 adapters + base, 16 and 32 clients
    .venv/bin/python bench/bench_serve.py --requests 200     # quicker
    .venv/bin/python bench/bench_serve.py --shape small --requests 200   # flan-t5-small's shape, ~10 min on 2 cores

Two `dialogtune serve` processes run side by side on the same base and adapters: one micro-batching
(--max-batch-size 32 and the server's --max-wait-ms: one generate call mixes adapters and the base), one with
--max-batch-size 1 (each request alone). At each client count the two take turns in chunks of
requests (batched, alone, alone, batched, ...), so a change in the shared host's load hits both alike.
Each request is one test dialogue of the bundled corpus, sent round-robin to the 4 adapters and the
base. Reported per server and client count: throughput (requests over the chunks' summed wall time),
p50/p99 latency, errors, the mean batch the server ran each request in, and each server's RSS after a
warm-up at full concurrency and after every chunk.
At most 2,000 requests in all, warm-ups included. The adapters are one 2-step LoRA run on the base,
copied four times with different random noise on its weights: as costly to serve as trained ones.
Target: batched throughput >= 3x one-at-a-time, 0 errors, flat memory.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package
sys.path.insert(0, str(REPO / "bench"))  # the sibling modules
MAX_REQUESTS = 2000
WARMUP = 32  # requests per server at the highest concurrency first: first-call and allocator costs are not throughput


def stand_in(shape: str, folder: Path) -> str:
    """A flan-t5-`shape`-shaped model with random weights and the T5 tokenizer, saved to `folder`."""
    from measure import SHAPES
    from recipes import build_model, load_tokenizer

    build_model(SHAPES[shape], seed=0).save_pretrained(folder)
    load_tokenizer().save_pretrained(folder)
    return str(folder)


def make_adapters(model: str, folder: Path, count: int) -> dict[str, str]:
    """`count` LoRA run folders on `model`: one short real run, copied with different weight noise."""
    import torch
    from safetensors.torch import load_file, save_file

    from dialogtune.configio import load_config
    from dialogtune.train import train

    overrides = {"model": model, "data.dataset": "builtin:dialogs", "method": "lora", "output": str(folder / "trained"),
                 "training.max_steps": 2, "training.save_strategy": "no", "data.max_train_samples": 64,
                 "data.max_eval_samples": 8, "lora.r": 16, "lora.target_modules": ["q", "v", "wi_0", "wi_1", "wo"]}
    config = load_config(None, overrides)
    trained = train(config, config.output, overwrite=True)
    runs = {}
    for i in range(count):
        name = f"adapter{i + 1}"
        shutil.copytree(trained.folder, folder / name, dirs_exist_ok=True)
        weights = load_file(folder / name / "adapter_model.safetensors")
        noise = torch.Generator().manual_seed(i)
        save_file({k: v + 0.01 * torch.randn(v.shape, generator=noise) for k, v in weights.items()},
                  folder / name / "adapter_model.safetensors")
        runs[name] = str(folder / name)
    return runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A `dialogtune serve` subprocess on 127.0.0.1."""

    def __init__(self, model: str, runs: dict[str, str], max_batch_size: int, max_wait_ms: float, log: Path,
                 threads: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "dialogtune", "-q", "serve", "--model", model, "--host", "127.0.0.1",
                "--port", str(self.port), "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms)]
        for name, run in runs.items():
            args += ["--adapter", f"{name}={run}"]
        self.log = log.open("w")
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}  # torch's intra-op threads
        self.process = subprocess.Popen(args, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server on port {self.port} exited; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"server on port {self.port} not ready after {timeout:.0f} s")

    def rss_mib(self) -> float:
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        self.process.terminate()  # SIGTERM: uvicorn's graceful shutdown
        self.process.wait(60)
        self.log.close()


async def load(url: str, bodies: list[dict], concurrency: int) -> dict:
    """Send `bodies` with `concurrency` clients; per-request latency, errors and the wall time."""
    import httpx

    todo = list(reversed(bodies))
    latencies, errors, batches = [], [], []
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=concurrency)) as http:
        async def client() -> None:
            while todo:
                body = todo.pop()
                start = time.perf_counter()
                try:
                    response = await http.post("/v1/summarize", json=body)
                    ok = response.status_code == 200 and len(response.json()["summaries"]) == len(body["dialogues"])
                    (latencies if ok else errors).append(time.perf_counter() - start if ok else response.text[:200])
                    if ok:
                        batches.append(response.json()["timings"]["batch_dialogues"])
                except httpx.HTTPError as err:
                    errors.append(repr(err))

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"requests": len(bodies), "wall_s": wall, "errors": errors, "latencies": latencies, "batches": batches}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    from dialogtune.batching import ServeOptions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny-t5", help="base model (default: the bundled tiny T5)")
    parser.add_argument("--shape", choices=["small", "base"],
                        help="instead of --model: a randomly initialised flan-t5-small or -base stand-in (bench/recipes.py, "
                             "the T5 tokenizer from ../shared); at these shapes compute, not Python, dominates a step")
    parser.add_argument("--requests", type=int, default=400, help="requests per server and client count")
    parser.add_argument("--chunks", type=int, default=4, help="turns per server and client count")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=ServeOptions().max_wait_ms, help="(default: the server's)")
    parser.add_argument("--threads", type=int, help="torch threads in each server (default: torch's own choice)")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    total = 2 * len(args.concurrency) * args.requests + 2 * WARMUP
    if total > MAX_REQUESTS:
        raise SystemExit(f"{total} requests in all; the load test is bounded at {MAX_REQUESTS}: lower --requests")

    from measure import matmul_peak

    peak = matmul_peak("cpu")
    with gzip.open(REPO / "dialogtune/assets/dialogs/test.jsonl.gz", "rt", encoding="utf-8") as handle:
        dialogues = [json.loads(line)["dialogue"] for line in handle]
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        if args.shape:
            args.model = stand_in(args.shape, work / f"flan-t5-{args.shape}-shape")
        runs = make_adapters(args.model, work, 4)
        targets = [*runs, None]  # four adapters and the bare base, round robin

        def bodies(n: int, offset: int = 0) -> list[dict]:
            return [{"dialogues": [dialogues[(offset + i) % len(dialogues)]], "adapter": targets[i % len(targets)],
                     "max_new_tokens": args.max_new_tokens} for i in range(n)]

        servers = {"batched": Server(args.model, runs, args.max_batch_size, args.max_wait_ms, work / "batched.log", args.threads),
                   "one at a time": Server(args.model, runs, 1, 0.001, work / "alone.log", args.threads)}
        rss = {}
        for mode, server in servers.items():
            server.wait_ready()
            asyncio.run(load(server.url, bodies(WARMUP), max(args.concurrency)))
            rss[mode] = {"after warm-up": server.rss_mib()}
        rows = []
        load_before = os.getloadavg()[0]
        chunk = args.requests // args.chunks
        for concurrency in args.concurrency:
            totals = {mode: {"mode": mode, "concurrency": concurrency, "wall_s": 0.0, "errors": [], "latencies": [],
                             "batches": []} for mode in servers}
            for turn in range(args.chunks):
                for mode in list(servers)[:: 1 if turn % 2 == 0 else -1]:
                    result = asyncio.run(load(servers[mode].url, bodies(chunk, 1000 + turn * chunk), concurrency))
                    for key in ("wall_s", "errors", "latencies", "batches"):
                        totals[mode][key] += result[key]
                    # After every chunk: growth that stops once the batch shapes have been seen is the allocator's
                    # high-water mark; growth that goes on chunk after chunk would be a leak.
                    rss[mode][f"{concurrency} clients, chunk {turn + 1}"] = servers[mode].rss_mib()
            rows += totals.values()
        for server in servers.values():
            server.stop()
        load_after = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    command = "python bench/bench_serve.py " + " ".join(sys.argv[1:])
    model = f"a flan-t5-{args.shape} stand-in (random weights)" if args.shape else args.model
    print(f"\n`{command.strip()}`: {model}, 4 adapters + base round robin, {args.requests} requests per round, "
          f"max_new_tokens {args.max_new_tokens}; batched = --max-batch-size {args.max_batch_size} --max-wait-ms "
          f"{args.max_wait_ms:g}; server threads {args.threads or 'torch default'}. Host: {os.cpu_count()} logical CPUs (shared), fp32 matmul peak {peak['gflops']:.1f} "
          f"GFLOP/s, load average {load_before:.1f} -> {load_after:.1f}.\n")
    print("| serving | clients | requests/s | p50 ms | p99 ms | errors | mean batch | batched / alone |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        row["throughput"] = len(row["latencies"]) / row["wall_s"]
        alone = next(r for r in rows if r["mode"] == "one at a time" and r["concurrency"] == row["concurrency"])
        ratio = f"{row['throughput'] / (len(alone['latencies']) / alone['wall_s']):.2f}x" if row["mode"] == "batched" else ""
        lat = row["latencies"] or [float("nan")]
        print(f"| {row['mode']} | {row['concurrency']} | {row['throughput']:.1f} | {1000 * percentile(lat, 50):.0f} | "
              f"{1000 * percentile(lat, 99):.0f} | {len(row['errors'])} | {statistics.mean(row['batches'] or [0]):.1f} | {ratio} |")
    points = list(next(iter(rss.values())))
    print("\n| RSS (MiB) | " + " | ".join(points) + " |\n|---|" + "---:|" * len(points))
    for mode, series in rss.items():
        print(f"| {mode} | " + " | ".join(f"{series[k]:.0f}" for k in points) + " |")
    for row in rows:
        for error in row["errors"][:3]:
            print(f"error ({row['mode']}, {row['concurrency']} clients): {error}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [{k: v for k, v in r.items() if k != "latencies"} for r in rows],
                                               "rss_mib": rss, "matmul_peak": peak}, indent=2))


if __name__ == "__main__":
    main()
