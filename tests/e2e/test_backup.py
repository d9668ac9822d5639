"""The SQLite backup and restore runbook (docs/operations/backup-restore.md), run as written:
`wardgate backup` of a gateway serving several clients at once, restored into a fresh
directory with the signing key and the witness file copied before the backup, `audit verify`,
and a gateway that serves from it. Then the restore that is older than the surviving witness
file: refused at start with `audit_log_rolled_back`, and what the runbook says to do next."""

from __future__ import annotations

import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import MODEL_A, Gateway, GatewayFactory, free_port, run_wardgate

CLIENTS = 4
# Requests answered before the backup starts, and again after it ends, before the load stops.
REQUESTS_AROUND = 40


class Load:
    """CLIENTS threads sending chat completions until stopped; every status is kept."""

    def __init__(self, gw: Gateway) -> None:
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(gw, i), daemon=True)
            for i in range(CLIENTS)
        ]
        for t in self._threads:
            t.start()

    def _client(self, gw: Gateway, i: int) -> None:
        with gw.http() as http:
            n = 0
            while not self._stop.is_set():
                body = {"model": MODEL_A, "messages": [{"role": "user", "content": f"echo:{i}-{n}"}]}
                try:
                    status = http.post("/v1/chat/completions", json=body).status_code
                except httpx.HTTPError:
                    status = 0
                self.statuses.append(status)
                n += 1

    def wait_for(self, answered: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.statuses) < answered:
            assert time.monotonic() < deadline, f"only {len(self.statuses)} requests answered"
            time.sleep(0.01)

    def stop(self) -> list[int]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.statuses


class Restored(Gateway):
    """`wardgate serve` on a restored directory, with the live gateway's settings otherwise."""

    def __init__(self, directory: Path, live: Gateway) -> None:
        self.backend_kind = live.backend_kind
        self.tmp = directory
        self.db = directory / "wardgate.db"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**live.env, "WARDGATE_DB": str(self.db), "WARDGATE_LISTEN": f"127.0.0.1:{port}"}
        self.key = live.key

    def start(self) -> Restored:
        self._spawn_serve()
        return self


@dataclass
class BackedUp:
    live: Gateway
    public_key: str
    backup: Path
    backup_entries: int
    # The witness file as it was just before the backup, and as the live gateway left it.
    witness_before: Path
    witness_after: Path
    live_entries: int
    # Made on the live gateway after the backup: not in it.
    later_key: str


def restore(into: Path, b: BackedUp, witness: Path) -> None:
    """The runbook's restore into a fresh directory: the backup as the database, the signing
    key from where it is kept, and a witness file."""
    into.mkdir()
    shutil.copy2(b.backup, into / "wardgate.db")
    shutil.copy2(b.live.tmp / "audit-signing.key", into / "audit-signing.key")
    shutil.copy2(witness, into / "audit-witness.log")


def verify(env: dict[str, str], public_key: str, witness: Path):
    return run_wardgate("audit", "verify", "--public-key", public_key, "--witness", str(witness),
                        env=env)


def entries(verified: str) -> int:
    m = re.match(r"ok: (\d+) entries", verified)
    assert m, verified
    return int(m.group(1))


def chat_ok(gw: Gateway, key: str) -> int:
    with gw.http(key) as http:
        r = http.post("/v1/chat/completions", json={
            "model": MODEL_A, "messages": [{"role": "user", "content": "echo:restored"}]})
    if r.status_code == 200:
        assert r.json()["choices"][0]["message"]["content"] == "restored"
    return r.status_code


@pytest.fixture(scope="module")
def backed_up(mock, tmp_path_factory) -> BackedUp:
    factory = GatewayFactory(tmp_path_factory)
    live = factory(mock, "ollama")
    keep = tmp_path_factory.mktemp("backups")
    public_key = live.cli("audit", "public-key").stdout.strip()

    load = Load(live)
    load.wait_for(REQUESTS_AROUND)
    # The runbook's order: the witness file first, then the database.
    witness_before = keep / "audit-witness.log"
    shutil.copy2(live.tmp / "audit-witness.log", witness_before)
    backup = keep / "wardgate-backup.db"
    answered_before = len(load.statuses)
    done = live.cli("backup", "--out", str(backup))
    answered_during = len(load.statuses) - answered_before
    load.wait_for(len(load.statuses) + REQUESTS_AROUND)
    later_key = live.create_key(tenant="after-backup")["key"]
    statuses = load.stop()
    assert live.stop() == 0
    # A clean stop leaves the database file complete on its own: its WAL copied in, emptied.
    wal = live.db.with_name(live.db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, wal.stat().st_size
    offline = tmp_path_factory.mktemp("offline") / "wardgate.db"
    shutil.copy2(live.db, offline)

    assert answered_during > 0, "no request was answered while the backup ran"
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    said = done.stdout
    assert f"to {backup} (" in said and "owner-only" in said, said
    assert str(live.tmp / "audit-signing.key") in said, said
    assert backup.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in keep.iterdir()) == ["audit-witness.log", "wardgate-backup.db"]
    m = re.search(r"audit log: (\d+) entries, last signed checkpoint at size (\d+)", said)
    assert m, said

    witness_after = keep / "audit-witness.after.log"
    shutil.copy2(live.tmp / "audit-witness.log", witness_after)
    live_verified = verify(live.env, public_key, witness_after)
    assert live_verified.returncode == 0, live_verified.stderr
    b = BackedUp(live=live, public_key=public_key, backup=backup, backup_entries=int(m.group(1)),
                 witness_before=witness_before, witness_after=witness_after,
                 live_entries=entries(live_verified.stdout), later_key=later_key)
    # The load went on after the backup: the live log is longer.
    assert b.live_entries > b.backup_entries + REQUESTS_AROUND
    # The database file copied alone after the stop holds all of it.
    alone = verify({**live.env, "WARDGATE_DB": str(offline)}, public_key, witness_after)
    assert alone.returncode == 0, alone.stderr
    assert entries(alone.stdout) == b.live_entries
    yield b
    factory.stop_all()


def test_a_backup_taken_under_load_restores_verifies_and_serves(backed_up, tmp_path):
    b = backed_up
    restore(tmp_path / "restored", b, b.witness_before)
    gw = Restored(tmp_path / "restored", b.live)
    # The runbook's check, before anything serves.
    checked = verify(gw.env, b.public_key, tmp_path / "restored/audit-witness.log")
    assert checked.returncode == 0, checked.stderr
    assert entries(checked.stdout) == b.backup_entries

    gw.start()._wait_ready()
    try:
        # A key from before the backup authenticates; one made after it does not exist here.
        assert chat_ok(gw, b.live.key) == 200
        assert chat_ok(gw, b.later_key) == 401
    finally:
        assert gw.stop() == 0
    again = verify(gw.env, b.public_key, tmp_path / "restored/audit-witness.log")
    assert again.returncode == 0, again.stderr
    assert entries(again.stdout) > b.backup_entries


def test_a_restore_older_than_the_witness_is_refused_until_the_witness_is_moved_aside(
    backed_up, tmp_path
):
    b = backed_up
    into = tmp_path / "restored"
    restore(into, b, b.witness_after)
    env = {**b.live.env, "WARDGATE_DB": str(into / "wardgate.db")}

    # The check the runbook runs first fails, naming the first entry the backup lacks.
    checked = verify(env, b.public_key, into / "audit-witness.log")
    assert checked.returncode != 0
    assert "FAILED" in checked.stderr, checked.stderr

    # A gateway started on it anyway refuses to start and alerts, writing nothing.
    gw = Restored(into, b.live).start()
    assert gw.proc.wait(timeout=60) == 1
    logs = gw.logs()
    gw.stop()
    assert "audit_log_rolled_back" in logs, logs[-4000:]
    assert "the audit log is required and could not start" in logs, logs[-4000:]
    assert f"size {b.live_entries}" in logs, logs[-4000:]
    assert (into / "audit-witness.log").read_bytes() == b.witness_after.read_bytes()

    # The runbook: keep the witness file as the record, move it aside, start.
    aside = into / "audit-witness.before-restore.log"
    (into / "audit-witness.log").rename(aside)
    gw = Restored(into, b.live).start()
    gw._wait_ready()
    try:
        assert chat_ok(gw, b.live.key) == 200
    finally:
        assert gw.stop() == 0
    # The log verifies with the witness file it has now; the one moved aside keeps failing at
    # the backup's end: the record of what the restore lost.
    assert verify(env, b.public_key, into / "audit-witness.log").returncode == 0
    assert verify(env, b.public_key, aside).returncode != 0
