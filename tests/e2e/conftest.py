"""End-to-end fixtures: the real `wardgate` and `mock-upstream` binaries on free ports.

Nothing is built here. The binaries come from `WARDGATE_BIN` and `MOCK_UPSTREAM_BIN`, defaulting
to `target/debug/` under the repository root (`scripts/test` builds them first). Every gateway
gets its own temporary SQLite database and a fresh API key made with the real CLI, and is torn
down with SIGTERM, so the suite also exercises the graceful-shutdown path.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Iterator

import httpx
import ollama
import openai
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# A relative path in the environment is taken from the current directory, as a shell would.
WARDGATE_BIN = Path(os.environ.get("WARDGATE_BIN", REPO_ROOT / "target/debug/wardgate")).resolve()
MOCK_UPSTREAM_BIN = Path(
    os.environ.get("MOCK_UPSTREAM_BIN", REPO_ROOT / "target/debug/mock-upstream")
).resolve()

# The models the mock serves. Distinct names (not `a`/`b`) so a test can swap one name for
# another inside an error body without touching unrelated letters.
MODEL_A = "alpha"
MODEL_B = "beta"
MOCK_TOKENS = 8
EMBEDDING_DIM = 16
# What the mock answers to any prompt that does not start with `echo:`.
COUNTED_TEXT = "".join(f"tok{i} " for i in range(MOCK_TOKENS))

STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 10.0
BACKEND_KINDS = ["ollama", "openai"]

# Requests to 127.0.0.1 must never go through a proxy that the environment may name.
os.environ["NO_PROXY"] = ",".join(
    filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1", "localhost"])
)
os.environ["no_proxy"] = os.environ["NO_PROXY"]


def free_port() -> int:
    """A port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any inherited `WARDGATE_*` or Ollama/OpenAI
    settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WARDGATE_", "OLLAMA_", "OPENAI_"))
    }
    # Every test talks from 127.0.0.1 and many send bad credentials on purpose; with the default
    # lockout (10 failures in 5 minutes per source) later tests would be locked out. Lockout
    # itself is tested in crates/gateway/tests/it/admin.rs.
    env["WARDGATE_LOCKOUT_THRESHOLD"] = "100000"
    # The default metrics ports are one per machine and tests run side by side; a test of the
    # metrics listener gives it a free port.
    env["WARDGATE_METRICS_LISTEN"] = "off"
    env["WARDGATE_LLM_METRICS_LISTEN"] = "off"
    env.update(extra)
    return env


def run_wardgate(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Runs the `wardgate` CLI to completion and returns its result (no check)."""
    return subprocess.run(
        [str(WARDGATE_BIN), *args],
        env=env if env is not None else clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _stop(proc: subprocess.Popen) -> int:
    """SIGTERM, then wait; SIGKILL only if the process ignores SIGTERM for too long."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture(scope="session", autouse=True)
def binaries() -> None:
    missing = [str(p) for p in (WARDGATE_BIN, MOCK_UPSTREAM_BIN) if not p.is_file()]
    if missing:
        pytest.exit(
            f"missing binaries {missing}: run `cargo build -p wardgate -p mock-upstream` "
            "or set WARDGATE_BIN / MOCK_UPSTREAM_BIN",
            returncode=2,
        )


class MockUpstream:
    """A running `mock-upstream`; `url` is its base URL (no path)."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.stderr_path = tmp / "mock-upstream.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [str(MOCK_UPSTREAM_BIN), "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=clean_env(),
        )
        self.url = self._read_address()
        # Keep draining stdout so the mock can never block on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def _read_address(self) -> str:
        prefix = "listening on "
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=STARTUP_TIMEOUT_S)
        sel.close()
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith(prefix):
            self.stop()
            pytest.fail(
                f"mock-upstream did not announce its address (got {line!r}); stderr:\n"
                + self.stderr_path.read_text(errors="replace")
            )
        return line[len(prefix) :]

    def stop(self) -> None:
        _stop(self.proc)
        self._stderr.close()


class LoggedProcess:
    """A child process whose stderr goes to `stderr_path`; stopped with SIGTERM."""

    proc: subprocess.Popen
    stderr_path: Path
    _stderr: IO[bytes]

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        code = _stop(self.proc)
        if not self._stderr.closed:
            self._stderr.close()
        return code

    def logs(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")


class Gateway(LoggedProcess):
    """A running `wardgate serve` over one mock backend, with its own database and key."""

    # How long the official clients wait; subclasses serving real models wait longer.
    client_timeout: float = CLIENT_TIMEOUT_S

    def __init__(
        self,
        tmp: Path,
        mock: MockUpstream,
        backend_kind: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.backend_kind = backend_kind
        self.tmp = tmp
        self.db = tmp / "wardgate.db"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        backend = {
            "ollama": f"ollama:{mock.url}",
            "openai": f"openai:{mock.url}/v1",
        }[backend_kind]
        self.env = clean_env(
            WARDGATE_DB=str(self.db),
            WARDGATE_BACKEND=backend,
            WARDGATE_LISTEN=f"127.0.0.1:{port}",
            WARDGATE_LOG_FORMAT="json",
            WARDGATE_LOG="debug",
            **(extra_env or {}),
        )
        # The key exists before the server starts, the way an operator would do it.
        self.key_record = self.create_key(tenant="e2e")
        self.key = self.key_record["key"]
        self._spawn_serve()
        self._wait_ready()

    # -- lifecycle ---------------------------------------------------------------------------

    def _spawn_serve(self) -> None:
        """Starts `wardgate serve` with `self.env`, its stderr in `tmp/wardgate.stderr`."""
        self.stderr_path = self.tmp / "wardgate.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [str(WARDGATE_BIN), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=self.env,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last = "no answer"
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self._fail(f"wardgate serve exited with {self.proc.returncode}")
                try:
                    resp = client.get(f"{self.url}/ready")
                    if resp.status_code == 200:
                        return
                    last = f"{resp.status_code} {resp.text}"
                except httpx.TransportError as err:
                    last = repr(err)
                time.sleep(0.05)
        self.stop()
        self._fail(f"wardgate not ready within {STARTUP_TIMEOUT_S}s (last: {last})")

    def _fail(self, why: str) -> None:
        pytest.fail(f"{why}; stderr:\n{self.logs()[-8000:]}")

    # -- CLI -------------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = run_wardgate(*args, env=self.env)
        if check and result.returncode != 0:
            pytest.fail(
                f"wardgate {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def create_key(
        self,
        tenant: str = "e2e",
        models: list[str] | None = None,
        expires: str | None = None,
        label: str | None = None,
    ) -> dict:
        args = ["keys", "create", "--tenant", tenant, "--json"]
        if models:
            args += ["--models", ",".join(models)]
        if expires:
            args += ["--expires", expires]
        if label:
            args += ["--label", label]
        out = self.cli(*args).stdout.strip().splitlines()
        assert len(out) == 1, f"expected one JSON line, got {out!r}"
        return json.loads(out[0])

    # -- clients -----------------------------------------------------------------------------

    def openai(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=key or self.key,
            max_retries=0,
            timeout=self.client_timeout,
        )

    def ollama(self, key: str | None = None) -> ollama.Client:
        return ollama.Client(
            host=self.url,
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=self.client_timeout,
        )

    def http(self, key: str | None = None, auth: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"} if auth else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=self.client_timeout)


def refused_for_tokens_per_day(gw: Gateway) -> bool:
    """Sends one chat completion with the gateway's key: False if answered, True if refused
    with the OpenAI-shaped 429 for a spent daily token budget (anything else fails)."""
    try:
        gw.openai().chat.completions.create(
            model=MODEL_A, messages=[{"role": "user", "content": "hello"}]
        )
        return False
    except openai.RateLimitError as e:
        assert e.code == "rate_limit_exceeded"
        assert "tokens per day" in str(e)
        assert int(e.response.headers["retry-after"]) >= 1
        return True


def start_mock(
    tmp_path_factory: pytest.TempPathFactory, *args: str, tokens: int = MOCK_TOKENS
) -> MockUpstream:
    """A mock serving MODEL_A and MODEL_B; `args` are extra `mock-upstream` flags."""
    tmp = tmp_path_factory.mktemp("mock")
    return MockUpstream(
        tmp,
        "--models",
        f"{MODEL_A},{MODEL_B}",
        "--tokens",
        str(tokens),
        "--embedding-dim",
        str(EMBEDDING_DIM),
        *args,
    )


@pytest.fixture(scope="session")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstream]:
    upstream = start_mock(tmp_path_factory)
    yield upstream
    upstream.stop()


class GatewayFactory:
    """Starts gateways and remembers them, so that a fixture can stop them all."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._started: list[Gateway] = []

    def __call__(
        self, mock: MockUpstream, backend_kind: str = "ollama", **extra_env: str
    ) -> Gateway:
        gw = Gateway(self._tmp.mktemp(f"gw-{backend_kind}"), mock, backend_kind, extra_env)
        self._started.append(gw)
        return gw

    def stop_all(self) -> None:
        for gw in self._started:
            gw.stop()


@pytest.fixture(scope="session")
def _session_gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(tmp_path_factory)
    yield factory
    factory.stop_all()


@pytest.fixture
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    """Starts a gateway of the test's own (own env, any mock); stopped when the test ends."""
    factory = GatewayFactory(tmp_path_factory)
    yield factory
    factory.stop_all()


@pytest.fixture(
    scope="session", params=BACKEND_KINDS, ids=[f"{k}-backend" for k in BACKEND_KINDS]
)
def gateway(
    request: pytest.FixtureRequest, mock: MockUpstream, _session_gateways: GatewayFactory
) -> Gateway:
    """The shared gateway, once per backend kind. Tests must not change its key."""
    return _session_gateways(mock, request.param)


@pytest.fixture(scope="session")
def one_gateway(mock: MockUpstream, _session_gateways: GatewayFactory) -> Gateway:
    """A single gateway for checks that do not depend on the backend kind (auth, limits,
    keys): running them twice would only cost time."""
    return _session_gateways(mock, "ollama")
