"""Two `wardgate serve` processes on one PostgreSQL database and one Redis behave as one gateway
(issue 17, "Tests that must exist"): keys, revocations, lockouts and budgets are shared, the
audit log is one verifiable log whoever wrote to it, a `kill -9` of the sequencing instance
loses no answered request's event, a database outage fails closed and heals by itself, and all
of it works through PgBouncer in transaction-pooling mode.

Each module run gets a PostgreSQL database of its own (dropped at the end) and each test a Redis
namespace of its own; the server is `WARDGATE_TEST_DATABASE_URL` (default the local trust-auth
one) and Redis `WARDGATE_TEST_REDIS_URL`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import ollama
import openai
import pytest

from conftest import (
    MODEL_A,
    STARTUP_TIMEOUT_S,
    Gateway,
    LoggedProcess,
    MockUpstream,
    clean_env,
    free_port,
    refused_for_tokens_per_day,
    run_wardgate,
)

PG_SERVER_URL = os.environ.get(
    "WARDGATE_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("WARDGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
LEASE_TAKEN = "took the audit sequencer lease"
# The bound for a revocation made at one instance to reach the others.
REVOCATION_BOUND_S = 0.1
# The sequencer lease lasts 5 s; a survivor takes it over, and drains the queue, well within this.
TAKEOVER_DEADLINE_S = 12.0


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] if ":" in parts.netloc.split("@")[-1] else parts.netloc
    return urlunsplit(parts._replace(netloc=f"{netloc}:{port}"))


def _psql(sql: str) -> None:
    result = subprocess.run(
        ["psql", PG_SERVER_URL, "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        pytest.fail(f"psql {sql!r} failed: {result.stderr}")


@dataclass
class SharedStore:
    """One migrated PostgreSQL database with the audit signing key every instance shares, an
    operator admin key, and the CLI environment that reaches it directly."""

    database: str
    url: str
    signing_key: str
    public_key: str
    admin_key: str
    user_key: str
    witness: Path

    def env(self, url: str | None = None, **extra: str) -> dict[str, str]:
        return clean_env(
            **{
                "WARDGATE_DATABASE_URL": url or self.url,
                "WARDGATE_AUDIT_SIGNING_KEY": self.signing_key,
                # The CLI's own checkpoints go here, not to ./data of the checkout.
                "WARDGATE_AUDIT_WITNESS": str(self.witness),
                **extra,
            }
        )

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = run_wardgate(*args, env=self.env(), timeout=60)
        if check and result.returncode != 0:
            pytest.fail(f"wardgate {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def verify(self) -> str:
        """`wardgate audit verify`: asserts it passes with nothing left queued; its output."""
        result = self.cli("audit", "verify", "--public-key", self.public_key, check=False)
        out = result.stdout + result.stderr
        assert result.returncode == 0, f"audit verify failed:\n{out}"
        assert re.search(r"^pending: 0\b", out, re.MULTILINE), f"events left queued:\n{out}"
        return out

    def terminal_events(self) -> collections.Counter[str]:
        """How many terminal `request` events each request id has in the log (sequenced ones;
        a queued one is counted under `pending`)."""
        counts: collections.Counter[str] = collections.Counter()
        after: int | None = None
        while True:
            args = ["audit", "query", "--event-type", "request", "--limit", "10000"]
            if after is not None:
                args += ["--after-seq", str(after)]
            lines = [json.loads(l) for l in self.cli(*args).stdout.splitlines() if l.strip()]
            for entry in lines:
                request_id = entry["event"].get("request_id")
                if request_id:
                    counts["pending" if entry.get("pending") else request_id] += 1
            sequenced = [e["seq"] for e in lines if not e.get("pending") and "seq" in e]
            if len(lines) < 10000 or not sequenced:
                return counts
            after = max(sequenced)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedStore]:
    database = f"wardgate_e2e_{uuid.uuid4().hex[:16]}"
    _psql(f"CREATE DATABASE {database}")
    try:
        url = _with_database(PG_SERVER_URL, database)
        key_dir = tmp_path_factory.mktemp("audit-key")
        env = clean_env(
            WARDGATE_DATABASE_URL=url, WARDGATE_AUDIT_WITNESS=str(key_dir / "cli-witness.log")
        )
        migrated = run_wardgate("migrate", env=env)
        assert migrated.returncode == 0, migrated.stderr
        key_file = key_dir / "signing.key"
        made = run_wardgate("audit", "keygen", "--out", str(key_file), env=env)
        assert made.returncode == 0, made.stderr
        public = re.search(r"public key: (\S+)", made.stdout + made.stderr)
        assert public, made.stdout + made.stderr
        shared = SharedStore(
            database,
            url,
            key_file.read_text().strip(),
            public.group(1),
            "",
            "",
            key_file.parent / "cli-witness.log",
        )
        admin_made = shared.cli(
            "keys", "create", "--tenant", "operator", "--roles", "admin", "--json"
        )
        admin = json.loads(admin_made.stdout)
        # The CLI creates tenant `e2e` along with this key.
        user = json.loads(shared.cli("keys", "create", "--tenant", "e2e", "--json").stdout)
        shared.admin_key, shared.user_key = admin["key"], user["key"]
        yield shared
    finally:
        _psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


class SharedGateway(Gateway):
    """A `wardgate serve` on the shared PostgreSQL database (no SQLite file, no key of its
    own: the store's keys work at every instance)."""

    def __init__(
        self, tmp: Path, mock: MockUpstream, store: SharedStore, name: str, env: dict[str, str]
    ) -> None:
        self.backend_kind = "openai"
        self.tmp = tmp
        self.name = name
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = store.env(
            WARDGATE_BACKEND=f"openai:{mock.url}/v1",
            WARDGATE_LISTEN=f"127.0.0.1:{port}",
            WARDGATE_AUDIT_WITNESS=str(tmp / "audit-witness.log"),
            WARDGATE_LOG_FORMAT="json",
            WARDGATE_LOG="info",
            **env,
        )
        self.key = store.user_key
        self.admin_key = store.admin_key
        self._spawn_serve()
        self._wait_ready()

    def admin(self) -> httpx.Client:
        return self.http(self.admin_key)

    def took_lease(self) -> bool:
        return LEASE_TAKEN in self.logs()

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def pair(
    tmp_path_factory: pytest.TempPathFactory, mock: MockUpstream, store: SharedStore
) -> Iterator:
    """Starts gateways on the shared store, each test with a Redis namespace of its own;
    `pair(url=..., **env)` starts two (A first, so A normally takes the sequencer lease)."""
    started: list[SharedGateway] = []
    namespace = f"wardgate-e2e-scale:{uuid.uuid4().hex}"

    def start(url: str | None = None, **extra: str) -> tuple[SharedGateway, SharedGateway]:
        env = {
            "WARDGATE_RATE_LIMIT_BACKEND": "redis",
            "WARDGATE_REDIS_URL": REDIS_URL,
            "WARDGATE_REDIS_NAMESPACE": namespace,
            **extra,
        }
        if url:
            env["WARDGATE_DATABASE_URL"] = url
        for name in ("A", "B"):
            gw = SharedGateway(tmp_path_factory.mktemp(f"scale-{name}"), mock, store, name, env)
            started.append(gw)
        return started[-2], started[-1]

    yield start
    for gw in started:
        gw.stop()


# ---- helpers --------------------------------------------------------------------------------


def chat(gw: Gateway, key: str | None = None) -> tuple[int, str | None]:
    """One chat completion through the official OpenAI client: (status, request id); status 0
    when the connection failed."""
    client = gw.openai(key)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL_A, messages=[{"role": "user", "content": "hello there"}]
        )
        completion = raw.parse()
        assert completion.choices[0].message.content
        return raw.status_code, raw.headers.get("x-request-id")
    except openai.APIStatusError as e:
        return e.status_code, e.response.headers.get("x-request-id")
    except openai.APIConnectionError:
        return 0, None
    finally:
        client.close()


def wait_for(what: str, condition, deadline_s: float, every_s: float = 0.05):
    """Polls `condition` until it returns something truthy; fails naming `what` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        got = condition()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {deadline_s}s"
        time.sleep(every_s)


def lease_holder(a: SharedGateway, b: SharedGateway) -> SharedGateway:
    """The instance whose log says it took the sequencer lease (one that an earlier test's
    stopped instance held lapses within 5 s first)."""
    return wait_for(
        "neither instance took the audit sequencer lease",
        lambda: next((gw for gw in (a, b) if gw.took_lease()), None),
        TAKEOVER_DEADLINE_S,
    )


@dataclass
class Outcome:
    instance: str
    sent: float
    done: float
    status: int
    request_id: str | None
    # For status 0: `timeout`, `aborted` (the connection closed mid-answer) or `refused`.
    error: str = ""


class Load:
    """Threads sending chat completions through the official client to each gateway until
    stopped, recording every outcome."""

    def __init__(
        self, gateways: list[SharedGateway], threads_each: int = 2, timeout: float = 30.0
    ) -> None:
        self.outcomes: list[Outcome] = []
        self._timeout = timeout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(gw,), daemon=True)
            for gw in gateways
            for _ in range(threads_each)
        ]
        for t in self._threads:
            t.start()

    def _run(self, gw: SharedGateway) -> None:
        client = openai.OpenAI(
            base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0, timeout=self._timeout
        )
        while not self._stop.is_set():
            sent = time.monotonic()
            error = ""
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=MODEL_A, messages=[{"role": "user", "content": "hello there"}]
                )
                raw.parse()  # an answer counts only once its body has arrived whole
                status, rid = raw.status_code, raw.headers.get("x-request-id")
            except openai.APIStatusError as e:
                status, rid = e.status_code, e.response.headers.get("x-request-id")
            except openai.APIConnectionError as e:
                status, rid = 0, None
                if isinstance(e, openai.APITimeoutError):
                    error = "timeout"
                elif isinstance(e.__cause__, httpx.ConnectError):
                    error = "refused"
                else:
                    error = "aborted"
                time.sleep(0.02)  # a dead instance refuses at once; do not spin
            with self._lock:
                self.outcomes.append(
                    Outcome(gw.name, sent, time.monotonic(), status, rid, error)
                )
        client.close()

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def answered(self, instance: str | None = None) -> int:
        with self._lock:
            return sum(
                1 for o in self.outcomes if o.status == 200 and instance in (None, o.instance)
            )

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        return self.outcomes


def assert_every_answer_logged_once(store: SharedStore, outcomes: list[Outcome]) -> int:
    answered = [o.request_id for o in outcomes if o.status == 200]
    assert answered, "no request was answered"
    assert all(answered), "an answered request had no x-request-id"
    counts = store.terminal_events()
    missing = [rid for rid in answered if counts[rid] == 0]
    doubled = {rid: counts[rid] for rid in answered if counts[rid] > 1}
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no event"
    assert not doubled, f"answered requests with more than one terminal event: {doubled}"
    return len(answered)


# ---- PgBouncer --------------------------------------------------------------------------


class Bouncer(LoggedProcess):
    """A PgBouncer of the test's own in transaction-pooling mode, with fewer server connections
    than the gateways' pools hold, in front of the test server. `kill()` and `start()` again
    keep its port."""

    def __init__(self, server_url: str) -> None:
        parts = urlsplit(server_url)
        # Its files must be readable by `nobody` when it runs as root (it refuses root).
        self.dir = Path(tempfile.mkdtemp(prefix="wardgate-e2e-pgbouncer-"))
        self.dir.chmod(0o755)
        self.port = free_port()
        users = self.dir / "users.txt"
        users.write_text(f'"{parts.username or "postgres"}" ""\n')
        self.ini = self.dir / "pgbouncer.ini"
        self.ini.write_text(
            "[databases]\n"
            f"* = host={parts.hostname} port={parts.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {users}\npool_mode = transaction\n"
            "default_pool_size = 4\nmax_client_conn = 200\n"
        )
        for path in (users, self.ini):
            path.chmod(0o644)
        self.binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(self.binary).is_file():
            # CI installs it (.ci/run); a missing tool must not pass as a skipped test.
            pytest.fail("pgbouncer is not installed: apt-get install -y pgbouncer")
        self.stderr_path = self.dir / "pgbouncer.stderr"
        self._stderr = self.stderr_path.open("ab")
        self.start()

    def start(self) -> None:
        args = [self.binary]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        if self._stderr.closed:
            self._stderr = self.stderr_path.open("ab")
        self.proc = subprocess.Popen(
            [*args, str(self.ini)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
        )

        def listening() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"pgbouncer exited {self.proc.returncode}:\n{self.logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(f"pgbouncer listening on {self.port}", listening, STARTUP_TIMEOUT_S, 0.02)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def url(self, direct_url: str) -> str:
        return _with_port(direct_url, self.port)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def bouncer() -> Iterator[Bouncer]:
    b = Bouncer(PG_SERVER_URL)
    yield b
    b.close()


# ---- the tests ------------------------------------------------------------------------------


def test_key_made_at_one_instance_works_at_the_other_and_its_revocation_reaches_it_at_once(
    pair, store
):
    # A cache lifetime far past the bound: only the broadcast can make A refuse in time.
    a, b = pair(WARDGATE_KEY_CACHE_TTL="5m")
    with a.admin() as admin:
        made = admin.post("/admin/keys", json={"tenant": "e2e", "label": "scale-out"})
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["id"]

    # Made at A, served at B (both official clients), and at A, so that A has it cached.
    assert chat(b, key)[0] == 200
    reply = b.ollama(key).chat(model=MODEL_A, messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content
    client_a = a.openai(key)
    assert client_a.models.list().data

    with b.admin() as admin:
        revoked = admin.delete(f"/admin/keys/{key_id}")
    assert revoked.status_code == 204, revoked.text
    revoked_at = time.monotonic()

    def refused_at_a() -> bool:
        try:
            client_a.models.list()
            return False
        except openai.AuthenticationError:
            return True

    wait_for("the key revoked at B is still served at A", refused_at_a, 5.0, every_s=0.005)
    took = time.monotonic() - revoked_at
    assert took < REVOCATION_BOUND_S, f"A refused the revoked key only after {took * 1000:.0f} ms"
    assert chat(a, key)[0] == 401
    assert chat(b, key)[0] == 401
    client_a.close()


def test_ten_failures_at_one_instance_lock_the_address_out_at_the_other(pair):
    a, b = pair(WARDGATE_LOCKOUT_THRESHOLD="10")

    def bad_key() -> str:
        # A fresh prefix each time: what locks is the address, not a key prefix.
        return f"wg_{uuid.uuid4().hex[:12]}_{uuid.uuid4().hex}"

    for _ in range(10):
        assert chat(a, bad_key())[0] == 401
    # B has seen no failure of its own; the count it refuses on is the shared one.
    with pytest.raises(openai.RateLimitError) as refused:
        b.openai(bad_key()).chat.completions.create(
            model=MODEL_A, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.code == "too_many_failed_authentications"
    assert int(refused.value.response.headers["retry-after"]) >= 1
    with pytest.raises(ollama.ResponseError) as refused_ollama:
        b.ollama(bad_key()).chat(model=MODEL_A, messages=[{"role": "user", "content": "hi"}])
    assert refused_ollama.value.status_code == 429
    # A lockout never refuses a valid credential.
    assert chat(b)[0] == 200


def test_one_tenant_token_budget_is_shared_by_both_instances(pair):
    # Less than one answer's tokens: the first answer spends the tenant's day.
    a, b = pair(WARDGATE_RATE_LIMIT_TENANT_TOKENS_PER_DAY="3")
    answer = a.openai().chat.completions.create(
        model=MODEL_A, messages=[{"role": "user", "content": "hello there"}]
    )
    assert answer.usage.total_tokens > 3

    # An answer is charged as it ends: once A refuses, the charge is in the shared store. B has
    # spent nothing itself, so its very first request must be refused (a B counting alone would
    # answer it).
    wait_for("A never refused after the spent budget", lambda: refused_for_tokens_per_day(a), 5.0)
    assert refused_for_tokens_per_day(b), "B answered with the tenant's day spent at A"
    with pytest.raises(ollama.ResponseError) as refused_ollama:
        b.ollama().chat(model=MODEL_A, messages=[{"role": "user", "content": "hi"}])
    assert refused_ollama.value.status_code == 429


def test_requests_through_both_instances_make_one_verifiable_audit_log(pair, store):
    a, b = pair()
    outcomes = []
    for i in range(20):
        gw = (a, b)[i % 2]
        status, rid = chat(gw)
        assert status == 200
        outcomes.append(Outcome(gw.name, 0, 0, status, rid))
    assert a.stop() == 0
    assert b.stop() == 0
    store.verify()
    assert assert_every_answer_logged_once(store, outcomes) == 20


def test_kill_9_of_the_sequencing_instance_under_load_loses_no_answered_event(pair, store):
    a, b = pair()
    holder = lease_holder(a, b)
    survivor = b if holder is a else a
    assert not survivor.took_lease()
    load = Load([a, b])
    wait_for(
        "no answers through both instances",
        lambda: load.answered(holder.name) >= 20 and load.answered(survivor.name) >= 20,
        10.0,
    )
    holder.kill9()
    answered_before = load.answered(survivor.name)
    wait_for(
        f"{survivor.name} did not take over the sequencer lease",
        survivor.took_lease,
        TAKEOVER_DEADLINE_S,
    )
    # The survivor kept serving throughout and after the takeover.
    wait_for(
        "the survivor stopped answering",
        lambda: load.answered(survivor.name) > answered_before + 20,
        10.0,
    )
    outcomes = load.stop()
    assert survivor.stop() == 0
    store.verify()
    assert assert_every_answer_logged_once(store, outcomes) >= 80


def test_database_outage_under_load_fails_closed_and_heals_by_itself(bouncer, pair, store):
    a, b = pair(url=bouncer.url(store.url))
    load = Load([a, b])
    wait_for(
        "no answers before the outage",
        lambda: load.answered("A") >= 10 and load.answered("B") >= 10,
        10.0,
    )

    bouncer.kill()
    down_at = time.monotonic()

    def not_ready(gw: SharedGateway) -> int:
        # The storage check waits for the pool (about 5 s) before it says no.
        with httpx.Client(timeout=15.0) as client:
            return wait_for(
                f"{gw.name} still says it is ready with the database down",
                lambda: (code := client.get(f"{gw.url}/ready").status_code) != 200 and code,
                15.0,
            )

    with concurrent.futures.ThreadPoolExecutor() as pool:
        codes = list(pool.map(not_ready, (a, b)))
    assert codes == [503, 503], codes
    wait_for(
        "no request sent with the database down was refused",
        lambda: any(o.sent > down_at and o.status == 503 for o in load.snapshot()),
        15.0,
    )

    bouncer.start()
    up_at = time.monotonic()
    # What was sent while the database was down and finished before it came back: refused,
    # never answered. (A request sent before the kill may be cut off mid-answer: it never
    # reaches its client either, and is not counted as answered.)
    during = [o for o in load.snapshot() if down_at < o.sent and o.done < up_at]
    assert during, "no request was sent and finished while the database was down"
    kinds = collections.Counter(o.status or o.error for o in during)
    assert set(kinds) == {503}, f"with the database down: {kinds}"

    # Back by itself, with no gateway restarted.
    def serving_again(gw: SharedGateway) -> bool:
        return any(
            o.instance == gw.name and o.sent > up_at and o.status == 200
            for o in load.snapshot()
        )

    for gw in (a, b):
        wait_for(f"{gw.name} did not serve again", lambda: serving_again(gw), 15.0)
        assert gw.proc.poll() is None, f"{gw.name} exited during the outage"
    with httpx.Client(timeout=15.0) as client:
        for gw in (a, b):
            assert client.get(f"{gw.url}/ready").status_code == 200
    outcomes = load.stop()
    assert a.stop() == 0
    assert b.stop() == 0
    store.verify()
    assert_every_answer_logged_once(store, outcomes)


def test_two_instance_smoke_through_pgbouncer_in_transaction_mode(bouncer, pair, store):
    a, b = pair(url=bouncer.url(store.url))
    with a.admin() as admin:
        made = admin.post("/admin/keys", json={"tenant": "e2e", "label": "via-pgbouncer"})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    outcomes = []
    for gw in (b, a):
        status, rid = chat(gw, key)
        assert status == 200
        outcomes.append(Outcome(gw.name, 0, 0, status, rid))
    reply = b.ollama(key).chat(model=MODEL_A, messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content
    assert a.stop() == 0
    assert b.stop() == 0
    store.verify()
    assert_every_answer_logged_once(store, outcomes)
