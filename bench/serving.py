#!/usr/bin/env python3
"""Serving benchmarks of the private LLM service over HTTP, in one run.

1. Concurrency: aggregate generated tokens/s at 1, 4, 8 and 16 concurrent requests
   (128 tokens each, greedy), through `wardgate serve` in front of `wardgate llm` (HMAC-signed,
   dual-service mode), and against `llama-cpp-python`'s server (`llama_cpp.server`) on the same
   GGUF file and thread count. Our side carries the extra gateway hop; theirs is called
   directly. Each level runs `--repeats` times; medians are reported.
2. Service levels: 100 users issuing 100 requests/minute in total (each user one request every
   60 s at a random phase, so arrivals are spread, not bursts), `max_tokens` 64, through the
   gateway for `--slo-minutes`: p50/p95/p99 latency, error rate, the model's load time (start of
   `wardgate llm` to `/ready`) and its resident memory (current and peak).

A benchmark, not a test: it prints figures and verdicts and never fails a build. Run it from the
repository root after `cargo build --release -p wardgate` and `scripts/fetch-test-models`:

    .venv/bin/python bench/serving.py

The `llama-cpp-python` side needs its server installed in a separate environment (pip builds
llama.cpp from source, several minutes), for the same CPU level as wardgate's ggml build
(x86-64-v3, see `.cargo/config.toml`). Its default native build died with SIGILL on its first
completion on this project's VMs, whose CPUs advertise more than they run:

    python3 -m venv .venv-lcp && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
        -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
        .venv-lcp/bin/pip install 'llama-cpp-python[server]==0.3.36'

Without it that comparison is skipped and said so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

# Greedy decoding of a prompt that invites a long answer, so that every request generates its
# whole budget on both servers (the token counts come from each response's `usage`).
LONG_PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm at sea."

# Short questions for the service-level run, varied so that no two consecutive requests share a
# whole prompt.
QUESTIONS = [
    "What is the capital of France?",
    "Explain what a fever is in two sentences.",
    "List three benefits of regular exercise.",
    "How does the heart pump blood?",
    "What should I eat for a healthy breakfast?",
    "Why is sleep important?",
    "Describe the water cycle briefly.",
    "What is a vaccine?",
    "Give me a tip for staying hydrated.",
    "What does a pharmacist do?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> tuple[float, float]:
    """Current and peak resident memory of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()

    def mib(key: str) -> float:
        return float(fields.get(key, "0 kB").split()[0]) / 1024

    return mib("VmRSS"), mib("VmHWM")


class Proc:
    """A child process whose output goes to a log file, stopped on exit."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path):
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def wait_ready(self, url: str, timeout: float) -> float:
        """Polls `url` until it answers 200; returns seconds since start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited early; see {self.log_path}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return time.monotonic() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"{self.name} not ready after {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDGATE_")}
    env.update(extra)
    return env


def model_path(wardgate: str, models: Path, model: str) -> Path:
    out = subprocess.run(
        [wardgate, "models", "list", "--json"],
        env=base_env(WARDGATE_MODELS=str(models)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    entry = json.loads(out).get(model)
    if not entry:
        raise SystemExit(f"{model} is not in {models}: run scripts/fetch-test-models first")
    return models / "blobs" / entry["file"]


class Target:
    """An OpenAI-compatible chat endpoint and how to call it."""

    def __init__(self, name: str, url: str, model: str, headers: dict[str, str]):
        self.name = name
        self.url = url
        self.model = model
        self.headers = headers

    async def chat(
        self, client: httpx.AsyncClient, content: str, max_tokens: int
    ) -> tuple[float, int]:
        """One non-streaming greedy completion: (seconds, completion tokens)."""
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        t0 = time.monotonic()
        r = await client.post(
            f"{self.url}/v1/chat/completions", json=body, headers=self.headers
        )
        elapsed = time.monotonic() - t0
        r.raise_for_status()
        return elapsed, int(r.json()["usage"]["completion_tokens"])


async def concurrency_level(target: Target, n: int, tokens: int) -> dict:
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as c:
        t0 = time.monotonic()
        results = await asyncio.gather(
            *(target.chat(c, LONG_PROMPT, tokens) for _ in range(n))
        )
        wall = time.monotonic() - t0
    generated = sum(t for _, t in results)
    return {
        "streams": n,
        "tokens": generated,
        "wall_s": wall,
        "tok_s": generated / wall,
        "p50_latency_s": statistics.median(s for s, _ in results),
    }


async def concurrency(target: Target, levels: list[int], tokens: int, repeats: int) -> list[dict]:
    # One unrecorded request warms caches and the connection pool.
    await concurrency_level(target, 1, 16)
    rows = []
    for n in levels:
        runs = [await concurrency_level(target, n, tokens) for _ in range(repeats)]
        row = {
            "streams": n,
            "tok_s": statistics.median(r["tok_s"] for r in runs),
            "p50_latency_s": statistics.median(r["p50_latency_s"] for r in runs),
            "tokens_per_request": statistics.median(r["tokens"] / n for r in runs),
            "runs_tok_s": [round(r["tok_s"], 1) for r in runs],
        }
        print(
            f"  {target.name:<18} {n:>3} streams: {row['tok_s']:7.1f} tok/s "
            f"(runs {row['runs_tok_s']}), p50 request {row['p50_latency_s']:.2f} s, "
            f"{row['tokens_per_request']:.0f} tokens/request",
            flush=True,
        )
        rows.append(row)
    return rows


async def service_levels(
    target: Target, users: int, per_minute: float, minutes: float, max_tokens: int, seed: int
) -> dict:
    """Open-loop load: each user sends one request every `users / per_minute` minutes."""
    rng = random.Random(seed)
    period = 60.0 * users / per_minute
    end = minutes * 60.0
    schedule = sorted(
        (phase + k * period, u)
        for u in range(users)
        for phase in [rng.uniform(0, period)]
        for k in range(int((end - phase) // period) + 1)
        if phase + k * period < end
    )
    latencies: list[float] = []
    errors: list[str] = []
    timeout = 60.0

    async with httpx.AsyncClient(
        timeout=timeout, limits=httpx.Limits(max_connections=users + 8)
    ) as c:

        async def one(at: float, user: int, t0: float) -> None:
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            start = time.monotonic()
            try:
                await target.chat(c, QUESTIONS[(user + int(at)) % len(QUESTIONS)], max_tokens)
                latencies.append(time.monotonic() - start)
            except (httpx.HTTPError, KeyError, ValueError) as e:
                errors.append(f"{type(e).__name__}: {e}")

        t0 = time.monotonic()
        await asyncio.gather(*(one(at, u, t0) for at, u in schedule))
        wall = time.monotonic() - t0

    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    total = len(schedule)
    return {
        "requests": total,
        "wall_s": wall,
        "achieved_per_minute": total / wall * 60,
        "p50_s": pct(0.50),
        "p95_s": pct(0.95),
        "p99_s": pct(0.99),
        "max_s": lat[-1] if lat else float("nan"),
        "errors": len(errors),
        "error_rate": len(errors) / total if total else 0.0,
        "first_errors": errors[:3],
    }


def other_load() -> float:
    """CPU share used by everything on the machine over one second, 0..1 (all cores)."""

    def ticks() -> tuple[int, int]:
        parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(p) for p in parts]
        return sum(values) - values[3] - values[4], sum(values)

    a = ticks()
    time.sleep(1)
    b = ticks()
    return (b[0] - a[0]) / max(1, b[1] - a[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--wardgate", default=str(ROOT / "target/release/wardgate"))
    ap.add_argument("--models", default=str(ROOT / ".cache/models"))
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count(),
        help="llama-cpp-python's threads; the engine uses every core, which is this default",
    )
    ap.add_argument("--streams", default="1,4,8,16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--llama-cpp-python",
        default=str(ROOT / ".venv-lcp/bin/python"),
        help="interpreter with llama-cpp-python[server] installed",
    )
    ap.add_argument("--slo-users", type=int, default=100)
    ap.add_argument("--slo-per-minute", type=float, default=100)
    ap.add_argument("--slo-minutes", type=float, default=3)
    ap.add_argument("--slo-max-tokens", type=int, default=64)
    ap.add_argument("--skip-concurrency", action="store_true")
    ap.add_argument("--skip-slo", action="store_true")
    ap.add_argument("--json-out")
    args = ap.parse_args()

    levels = [int(x) for x in args.streams.split(",")]
    models = Path(args.models).resolve()
    gguf = model_path(args.wardgate, models, args.model)
    load = other_load()
    print(f"serving bench: {args.model} ({gguf.name}), {args.threads} threads, "
          f"{os.cpu_count()} CPUs, other load before start {load:.0%}")
    if load > 0.05:
        print("  warning: the machine is busy; figures will be low and noisy")

    report: dict = {"model": args.model, "threads": args.threads, "other_load": load}
    logdir = Path(tempfile.mkdtemp(prefix="wardgate-serving-"))
    procs: list[Proc] = []
    try:
        secret = secrets.token_hex(32)
        llm_port, gw_port = free_port(), free_port()
        llm = Proc(
            "wardgate-llm",
            [args.wardgate, "llm"],
            base_env(
                WARDGATE_LLM_LISTEN=f"127.0.0.1:{llm_port}",
                WARDGATE_LLM_SECRET=secret,
                WARDGATE_MODELS=str(models),
                WARDGATE_PRELOAD=args.model,
                WARDGATE_LOG="warn",
            ),
            logdir,
        )
        procs.append(llm)
        load_s = llm.wait_ready(f"http://127.0.0.1:{llm_port}/ready", 120)
        rss_loaded = rss_mib(llm.proc.pid)
        print(f"  wardgate llm ready (model loaded) {load_s:.2f} s after start; "
              f"resident {rss_loaded[0]:.0f} MiB")
        report["model_load_s"] = load_s
        report["rss_after_load_mib"] = rss_loaded[0]

        db = logdir / "gateway.db"
        gw_env = base_env(
            WARDGATE_DB=str(db),
            WARDGATE_LISTEN=f"127.0.0.1:{gw_port}",
            WARDGATE_BACKEND=f"ollama:http://127.0.0.1:{llm_port}",
            WARDGATE_BACKEND_SECRET=secret,
            WARDGATE_REQUEST_TIMEOUT="120s",
            WARDGATE_FIRST_TOKEN_TIMEOUT="60s",
            WARDGATE_RATE_LIMIT_RPM="100000",
            # One key stands for every simulated user: no per-key cap on requests in flight.
            WARDGATE_RATE_LIMIT_CONCURRENCY="0",
            WARDGATE_LOG="warn",
        )
        key = json.loads(
            subprocess.run(
                [args.wardgate, "keys", "create", "--tenant", "bench", "--json"],
                env=gw_env, capture_output=True, text=True, check=True,
            ).stdout
        )["key"]
        gw = Proc("wardgate-serve", [args.wardgate, "serve"], gw_env, logdir)
        procs.append(gw)
        gw.wait_ready(f"http://127.0.0.1:{gw_port}/ready", 60)
        ours = Target(
            "wardgate (gateway)", f"http://127.0.0.1:{gw_port}", args.model,
            {"authorization": f"Bearer {key}"},
        )

        if not args.skip_concurrency:
            print("\nConcurrency: aggregate generated tokens/s, "
                  f"{args.tokens} tokens per request, medians of {args.repeats}")
            report["wardgate"] = asyncio.run(
                concurrency(ours, levels, args.tokens, args.repeats)
            )
            report["llama_cpp_python"] = run_llama_cpp_python(args, gguf, levels, logdir)
            print_concurrency(report)

        if not args.skip_slo:
            print(f"\nService levels: {args.slo_users} users, {args.slo_per_minute:g} requests/"
                  f"minute in total, max_tokens {args.slo_max_tokens}, {args.slo_minutes:g} min, "
                  "through the gateway")
            slo = asyncio.run(
                service_levels(ours, args.slo_users, args.slo_per_minute, args.slo_minutes,
                               args.slo_max_tokens, seed=7)
            )
            rss_now, rss_peak = rss_mib(llm.proc.pid)
            slo["llm_rss_mib"] = rss_now
            slo["llm_peak_rss_mib"] = rss_peak
            report["slo"] = slo
            ok_p95 = slo["p95_s"] < 3
            ok_err = slo["error_rate"] < 0.01
            ok_load = load_s < 30
            print(f"  requests {slo['requests']} ({slo['achieved_per_minute']:.1f}/min), "
                  f"latency p50 {slo['p50_s']:.2f} s, p95 {slo['p95_s']:.2f} s, "
                  f"p99 {slo['p99_s']:.2f} s, max {slo['max_s']:.2f} s")
            print(f"  p95 < 3 s: {'met' if ok_p95 else 'NOT met'}; errors {slo['errors']} "
                  f"({slo['error_rate']:.2%}) < 1%: {'met' if ok_err else 'NOT met'}; "
                  f"model load {load_s:.2f} s < 30 s: {'met' if ok_load else 'NOT met'}")
            print(f"  wardgate llm resident memory: {rss_now:.0f} MiB now, "
                  f"{rss_peak:.0f} MiB peak")
            if slo["first_errors"]:
                print(f"  first errors: {slo['first_errors']}")
    finally:
        for p in reversed(procs):
            p.stop()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    shutil.rmtree(logdir, ignore_errors=True)


def run_llama_cpp_python(args, gguf: Path, levels: list[int], logdir: Path) -> list[dict] | None:
    py = Path(args.llama_cpp_python)
    if not py.exists() or subprocess.run(
        [str(py), "-c", "import llama_cpp.server"], capture_output=True
    ).returncode != 0:
        print(f"  llama-cpp-python: skipped ({py} has no llama_cpp.server; see this file's "
              "docstring for how to install it)")
        return None
    port = free_port()
    # The same context per request as ours (1024 tokens per slot) and the same threads.
    srv = Proc(
        "llama-cpp-python",
        [str(py), "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
         "--port", str(port), "--n_threads", str(args.threads),
         "--n_threads_batch", str(args.threads), "--n_ctx", "1024"],
        base_env(),
        logdir,
    )
    try:
        srv.wait_ready(f"http://127.0.0.1:{port}/v1/models", 120)
        theirs = Target("llama-cpp-python", f"http://127.0.0.1:{port}", args.model, {})
        return asyncio.run(concurrency(theirs, levels, args.tokens, args.repeats))
    finally:
        srv.stop()


def print_concurrency(report: dict) -> None:
    ours = report["wardgate"]
    theirs = report.get("llama_cpp_python")
    single = ours[0]["tok_s"] if ours and ours[0]["streams"] == 1 else None
    print("\n  | streams | wardgate tok/s | vs 1 stream | llama-cpp-python tok/s | ratio |")
    print("  |---:|---:|---:|---:|---:|")
    for i, row in enumerate(ours):
        scale = f"{row['tok_s'] / single:.2f}x" if single else "-"
        other = theirs[i]["tok_s"] if theirs else None
        ratio = f"{row['tok_s'] / other:.2f}x" if other else "-"
        other_s = f"{other:.1f}" if other else "-"
        print(f"  | {row['streams']} | {row['tok_s']:.1f} | {scale} | {other_s} | {ratio} |")
    for i, row in enumerate(ours):
        if row["streams"] == 8:
            if single:
                s = row["tok_s"] / single
                print(f"  8 streams >= 2.5x single stream: {'met' if s >= 2.5 else 'NOT met'} "
                      f"({s:.2f}x)")
            if theirs:
                r = row["tok_s"] / theirs[i]["tok_s"]
                print(f"  8 streams >= 1.5x llama-cpp-python: {'met' if r >= 1.5 else 'NOT met'} "
                      f"({r:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
