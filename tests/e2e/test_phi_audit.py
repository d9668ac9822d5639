"""PHI protection and the audit trail, end to end with the real binaries:

* a clinical note carrying all 18 Safe Harbor identifiers goes through every route, in the
  default mode and with de-identification and blocking on; afterwards none of its values is in
  the logs, in any error body, in the database (audit included) or in an audit export;
* `wardgate phi scan` / `redact` on files and stdin;
* `wardgate audit export` / `verify` / `query` on a live log, and `verify` failing on a
  tampered export at the right index;
* `kill -9` under load: every answer a client received has its committed audit event, and
  the log verifies after a restart.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time

import httpx
import pytest

from conftest import MODEL_A, WARDGATE_BIN, clean_env, run_wardgate

# One value per Safe Harbor category (and both IP versions); none may be found anywhere
# wardgate writes.
PHI_VALUES = {
    "name": "Margaret O'Donnell",
    "street": "1428 Elm Street",
    "zip": "62704",
    "dob": "03/14/1931",
    "age": "93-year-old",
    "phone": "(217) 555-0148",
    "fax": "(217) 555-0199",
    "email": "m.odonnell@example.org",
    "ssn": "531-26-4420",
    "mrn": "4471902",
    "plan": "HPX88231004",
    "account": "99120344871",
    "license": "D1234-5678-9012",
    "vin": "1HGCM82633A004352",
    "plate": "7ABC123",
    "device": "PM-99812-XZ",
    "url": "https://patients.example.org/m-odonnell",
    "ipv4": "10.23.45.67",
    "ipv6": "2001:db8::7334",
    "biometric": "FP-558812",
    "other": "44-XR-9921",
}
NOTE = (
    f"Patient {PHI_VALUES['name']}, a {PHI_VALUES['age']} woman, DOB {PHI_VALUES['dob']}, "
    f"lives at {PHI_VALUES['street']}, Springfield, IL {PHI_VALUES['zip']}. "
    f"Phone {PHI_VALUES['phone']}, fax {PHI_VALUES['fax']}, email {PHI_VALUES['email']}. "
    f"SSN {PHI_VALUES['ssn']}, MRN {PHI_VALUES['mrn']}, member ID {PHI_VALUES['plan']}, "
    f"account {PHI_VALUES['account']}, driver's license {PHI_VALUES['license']}. "
    f"Car VIN {PHI_VALUES['vin']}, plate {PHI_VALUES['plate']}. "
    f"Pacemaker serial {PHI_VALUES['device']}. Portal {PHI_VALUES['url']}, "
    f"last login from {PHI_VALUES['ipv4']} and {PHI_VALUES['ipv6']}. "
    f"Fingerprint ID {PHI_VALUES['biometric']}. Study subject {PHI_VALUES['other']}."
)


def every_route(gw, note: str) -> list[str]:
    """Sends `note` through every route that takes text; returns every error body seen."""
    errors: list[str] = []
    echo = f"echo:{note}"
    requests = [
        ("/v1/chat/completions", {"model": MODEL_A, "messages": [{"role": "user", "content": echo}]}),
        ("/v1/chat/completions", {"model": MODEL_A, "stream": True,
                                  "messages": [{"role": "system", "content": note},
                                               {"role": "user", "content": echo}]}),
        ("/v1/completions", {"model": MODEL_A, "prompt": echo}),
        ("/v1/embeddings", {"model": MODEL_A, "input": [note]}),
        ("/api/chat", {"model": MODEL_A, "messages": [{"role": "user", "content": echo}]}),
        ("/api/generate", {"model": MODEL_A, "prompt": echo, "system": note}),
        ("/api/embed", {"model": MODEL_A, "input": note}),
        ("/api/embeddings", {"model": MODEL_A, "prompt": note}),
        # Refusals whose bodies carry the note.
        ("/v1/chat/completions", {"model": MODEL_A, "messages": note}),
        ("/api/generate", {"model": MODEL_A, "prompt": [note]}),
        ("/v1/chat/completions", {"model": "no-such-model",
                                  "messages": [{"role": "user", "content": note}]}),
    ]
    with httpx.Client(base_url=gw.url, timeout=30,
                      headers={"Authorization": f"Bearer {gw.key}"}) as http:
        for path, body in requests:
            r = http.post(path, json=body)
            if r.status_code >= 400:
                errors.append(r.text)
        # A broken JSON body whose decoder error could quote it.
        r = http.post("/v1/chat/completions", content=('{"model": "' + note).encode(),
                      headers={"content-type": "application/json"})
        errors.append(r.text)
        # Unauthenticated.
        r = httpx.post(f"{gw.url}/api/chat", json=requests[4][1])
        errors.append(r.text)
    return errors


def holds(haystack: bytes, value: str) -> bool:
    """Whether `value` stands in `haystack` as a value of its own: not inside a longer run of
    letters and digits. A short number such as the zip 62704 also turns up by chance inside hex
    digests and request ids (a keyed prompt digest once read `...ae6270462d14`), which is no
    leak; written anywhere as text, the value has a boundary on each side."""
    pattern = rb"(?<![0-9A-Za-z])" + re.escape(value.encode()) + rb"(?![0-9A-Za-z])"
    return re.search(pattern, haystack) is not None


def assert_nowhere(gw, errors: list[str], export: str) -> None:
    logs = gw.logs().encode()
    stored = b"".join(p.read_bytes() for p in sorted(gw.db.parent.glob(gw.db.name + "*")))
    for what, value in PHI_VALUES.items():
        assert not holds(logs, value), f"{what} {value!r} is in the logs"
        for body in errors:
            assert not holds(body.encode(), value), f"{what} {value!r} is in an error body: {body}"
        assert not holds(stored, value), f"{what} {value!r} is in the database"
        assert not holds(export.encode(), value), f"{what} {value!r} is in the audit export"


@pytest.mark.parametrize("mode", ["off", "deidentify"])
def test_no_phi_value_is_logged_stored_audited_or_echoed_in_errors(mock, start_gateway, mode):
    gw = start_gateway(mock, "ollama", WARDGATE_PHI_MODE=mode)
    errors = every_route(gw, NOTE)
    assert len(errors) == 5, errors
    assert gw.stop() == 0
    export = gw.cli("audit", "export").stdout
    assert export.count("\n") > 10
    assert_nowhere(gw, errors, export)


def test_block_mode_refuses_naming_categories_only(mock, start_gateway):
    gw = start_gateway(mock, "openai", WARDGATE_PHI_MODE="block")
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {gw.key}"}) as http:
        r = http.post("/v1/chat/completions",
                      json={"model": MODEL_A, "messages": [{"role": "user", "content": NOTE}]})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "phi_detected"
        for category in ["PERSON", "SSN", "EMAIL", "PHONE", "FAX", "MRN", "VEHICLE", "IP_ADDRESS"]:
            assert category in err["message"], err["message"]
        ok = http.post("/v1/chat/completions",
                       json={"model": MODEL_A,
                             "messages": [{"role": "user", "content": "What is a fever?"}]})
        assert ok.status_code == 200, ok.text
    assert gw.stop() == 0
    assert_nowhere(gw, [r.text], gw.cli("audit", "export").stdout)


def test_phi_scan_and_redact_on_files_and_stdin(tmp_path):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text(f"Call {PHI_VALUES['phone']} about SSN {PHI_VALUES['ssn']}.\n")
    b.write_text("Nothing to see here.\n")

    one = run_wardgate("phi", "scan", str(a))
    assert one.returncode == 0, one.stderr
    found = [json.loads(line) for line in one.stdout.splitlines()]
    by_cat = {f["category"]: f for f in found}
    assert by_cat["SSN"]["text"] == PHI_VALUES["ssn"]
    raw = a.read_bytes()
    assert raw[by_cat["SSN"]["start"]:by_cat["SSN"]["end"]].decode() == PHI_VALUES["ssn"]
    assert "file" not in found[0]

    two = run_wardgate("phi", "scan", str(a), str(b))
    assert {json.loads(line)["file"] for line in two.stdout.splitlines()} == {str(a)}

    red = run_wardgate("phi", "redact", str(a))
    assert red.returncode == 0
    assert PHI_VALUES["ssn"] not in red.stdout and "[SSN]" in red.stdout

    piped = subprocess.run([str(WARDGATE_BIN), "phi", "redact"], input=NOTE, text=True,
                           capture_output=True, env=clean_env(), timeout=30)
    assert piped.returncode == 0, piped.stderr
    for what in ["ssn", "email", "phone", "vin", "ipv4", "mrn"]:
        assert PHI_VALUES[what] not in piped.stdout, (what, piped.stdout)

    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff\xfe not utf-8")
    r = run_wardgate("phi", "scan", str(bad))
    assert r.returncode != 0 and str(bad) in r.stderr


def public_key(gw) -> str:
    r = gw.cli("audit", "public-key")
    return r.stdout.strip()


def test_audit_export_verify_and_query(mock, start_gateway, tmp_path):
    gw = start_gateway(mock, "ollama")
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {gw.key}"}) as http:
        for _ in range(5):
            assert http.post("/api/chat", json={"model": MODEL_A, "stream": False,
                             "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    assert httpx.get(f"{gw.url}/api/tags").status_code == 401
    assert gw.stop() == 0
    vkey = public_key(gw)
    assert vkey.startswith("wardgate/audit+") and len(vkey.split("+", 2)[1]) == 8, vkey

    live = gw.cli("audit", "verify", "--public-key", vkey,
                  "--witness", str(gw.db.parent / "audit-witness.log"), check=False)
    assert live.returncode == 0, live.stderr + live.stdout

    denied = gw.cli("audit", "query", "--outcome", "deny").stdout.splitlines()
    events = [json.loads(line)["event"] for line in denied]
    assert len(events) == 1 and events[0]["event_type"] == "auth_failure", events
    allowed = gw.cli("audit", "query", "--event-type", "request", "--outcome", "allow").stdout
    assert len(allowed.splitlines()) == 5

    export = tmp_path / "audit.jsonl"
    gw.cli("audit", "export", "--out", str(export))
    good = gw.cli("audit", "verify", "--export", str(export), "--public-key", vkey, check=False)
    assert good.returncode == 0, good.stderr

    # Tamper with the fourth entry's event: verify fails naming seq 3.
    lines = export.read_text().splitlines()
    entry_lines = [i for i, line in enumerate(lines) if '"event"' in line]
    i = entry_lines[3]
    lines[i] = lines[i].replace('"allow"', '"deny"', 1).replace('"request_start"', '"request"', 1)
    bad = tmp_path / "tampered.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    r = gw.cli("audit", "verify", "--export", str(bad), "--public-key", vkey, check=False)
    assert r.returncode != 0
    assert "3" in (r.stderr + r.stdout), r.stderr + r.stdout


def test_kill_9_under_load_loses_no_audit_event_of_an_answered_request(mock, start_gateway):
    gw = start_gateway(mock, "openai")
    answered: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=gw.url, timeout=5,
                          headers={"Authorization": f"Bearer {gw.key}"}) as http:
            while not stop.is_set():
                try:
                    r = http.post("/v1/chat/completions",
                                  json={"model": MODEL_A,
                                        "messages": [{"role": "user", "content": "hi"}]})
                    r.json()
                    if r.status_code == 200:
                        with lock:
                            answered.append(r.headers["x-request-id"])
                except (httpx.HTTPError, ValueError):
                    pass

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(answered) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    gw.proc.kill()
    gw.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(answered) >= 100, f"only {len(answered)} answers before the kill"

    recorded: set[str] = set()
    after = None
    while True:
        args = ["audit", "query", "--event-type", "request", "--limit", "10000"]
        if after is not None:
            args += ["--after-seq", str(after)]
        lines = gw.cli(*args).stdout.splitlines()
        if not lines:
            break
        for line in lines:
            entry = json.loads(line)
            recorded.add(entry["event"]["request_id"])
            after = entry["seq"]
    missing = [rid for rid in answered if rid not in recorded]
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no audit event"

    # A restart resumes the log and signs what the kill left uncovered; then it verifies.
    restart_and_stop(gw)
    r = run_wardgate("audit", "verify", "--public-key", public_key(gw),
                     "--witness", str(gw.db.parent / "audit-witness.log"), env=gw.env)
    assert r.returncode == 0, r.stderr + r.stdout


def restart_and_stop(gw) -> None:
    proc = subprocess.Popen([str(WARDGATE_BIN), "serve"], env=gw.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
            try:
                if httpx.get(f"{gw.url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            pytest.fail("the restarted gateway never became ready")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_key_changes_from_the_cli_are_audited_beside_a_running_gateway(mock, start_gateway):
    """`wardgate keys create|rotate|revoke` write their events like the admin API does, while
    the gateway's own writer keeps appending to the same log, which still verifies."""
    gw = start_gateway(mock, "ollama")
    chat = {"model": MODEL_A, "stream": False, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {gw.key}"}) as http:
        assert http.post("/api/chat", json=chat).status_code == 200
        made = gw.create_key(tenant="clinic-cli")
        assert http.post("/api/chat", json=chat).status_code == 200
        rotated = json.loads(gw.cli("keys", "rotate", made["id"], "--json").stdout)
        gw.cli("keys", "revoke", rotated["id"])
        assert http.post("/api/chat", json=chat).status_code == 200
        # Listing changes nothing and writes nothing.
        gw.cli("keys", "list")
    assert gw.stop() == 0

    def events(event_type: str) -> list[dict]:
        out = gw.cli("audit", "query", "--event-type", event_type).stdout.splitlines()
        return [json.loads(line)["event"] for line in out]

    # The fixture's own key (made with the CLI before the gateway started) is audited too.
    assert any(e["actor_id"].startswith("cli:") and e["tenant"] != "clinic-cli"
               for e in events("key_created"))
    created = [e for e in events("key_created") if e["tenant"] == "clinic-cli"]
    revoked = [e for e in events("key_revoked") if e["tenant"] == "clinic-cli"]
    assert all(e["actor_id"].startswith("cli:") for e in created + revoked), created + revoked
    assert len(created) == 2, created
    assert f"key_id={made['id']}" in created[0]["detail"]
    assert f"rotated_from={made['id']}" in created[1]["detail"]
    assert len(revoked) == 1 and f"key_id={rotated['id']}" in revoked[0]["detail"], revoked
    assert all(e["outcome"] == "allow" and e["actor_kind"] == "user" for e in created + revoked)
    assert made["key"] not in json.dumps(created + revoked)
    assert len(events("request")) == 3

    live = gw.cli("audit", "verify", "--public-key", public_key(gw),
                  "--witness", str(gw.db.parent / "audit-witness.log"), check=False)
    assert live.returncode == 0, live.stderr + live.stdout


def test_a_key_change_is_refused_when_the_audit_log_cannot_start(tmp_path):
    env = clean_env()
    env["WARDGATE_DB"] = str(tmp_path / "wardgate.db")
    # The signing key's directory is a file: the log cannot start, so nothing may change.
    (tmp_path / "not-a-dir").write_text("x")
    env["WARDGATE_AUDIT_KEY"] = str(tmp_path / "not-a-dir" / "audit.key")
    r = subprocess.run([str(WARDGATE_BIN), "keys", "create", "--tenant", "t"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "no key was changed" in r.stderr, r.stderr
    listed = subprocess.run([str(WARDGATE_BIN), "keys", "list", "--json"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
