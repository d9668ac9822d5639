"""The /metrics listener against the operator's side (issue 18): a real Prometheus scrapes a
running `wardgate serve` every second while traffic goes through it with the official `openai`
client, and then every query of every panel of deploy/monitoring/grafana/wardgate.json must
return data and every rule of deploy/monitoring/alerts.yml must evaluate without error.

The Prometheus runner and the dashboard's queries come from scripts/check-deploy, which runs
the same check against a hand-written sample of docs/METRICS.md: this test is the one against
what the code really exposes."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import threading

import httpx
import openai
import pytest

from conftest import MODEL_A, REPO_ROOT, free_port, start_mock

# Panels with no data from one `wardgate serve` over an HTTP backend on SQLite without TLS,
# and why. Keyed by panel title; anything else without data fails the test.
ENGINE = "engine metrics come from `wardgate llm` or an `embedded` backend, not this gateway"
EMPTY_FOR_A_GATEWAY_ALONE = {
    ("Queue depth", "A"): ENGINE,
    ("Slots busy / slots", "A"): ENGINE,
    ("Slots busy / slots", "B"): ENGINE,
    ("KV cache use", "A"): ENGINE,
    ("Model loads", "A"): ENGINE,
    ("Model loads", "B"): ENGINE,
    ("Sequencer lag and stall (PostgreSQL)", "A"): "the lag is exposed with a PostgreSQL store only",
    ("TLS certificate expires in", "A"): "no series for a listener without TLS",
}


def load_check_deploy():
    """scripts/check-deploy as a module (it has no .py suffix)."""
    path = str(REPO_ROOT / "scripts/check-deploy")
    loader = importlib.machinery.SourceFileLoader("check_deploy", path)
    spec = importlib.util.spec_from_loader("check_deploy", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def counter(exposition: str, series: str) -> float:
    """The value of one series (name and labels exactly as exposed) in a text exposition."""
    for line in exposition.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} is not exposed:\n{exposition[-4000:]}")


def drive_traffic(gw) -> None:
    """One of each kind of request the dashboard shows: answered, streamed, embeddings,
    refused for an unknown model and for a bad key, and a request with PHI under deidentify."""
    client = gw.openai()
    for _ in range(2):
        client.chat.completions.create(
            model=MODEL_A, messages=[{"role": "user", "content": "Say something."}]
        )
        stream = client.chat.completions.create(
            model=MODEL_A, messages=[{"role": "user", "content": "Say something."}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        client.embeddings.create(model=MODEL_A, input=["one", "two"])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    for _ in range(4):
        with pytest.raises((openai.AuthenticationError, openai.RateLimitError)):
            gw.openai(key="wg_not_a_real_key").chat.completions.create(
                model=MODEL_A, messages=[{"role": "user", "content": "hi"}]
            )
    # PHI (a phone number and an SSN) under the deidentify mode the gateway runs with.
    client.chat.completions.create(
        model=MODEL_A,
        messages=[{"role": "user", "content": "Call 555-867-5309 about SSN 123-45-6789."}],
    )


@pytest.fixture
def failing_first_mock(tmp_path_factory):
    """A mock whose first two inference requests answer 500: failed GenAI operations."""
    upstream = start_mock(tmp_path_factory, "--fail-first", "2")
    yield upstream
    upstream.stop()


def test_every_dashboard_panel_and_alert_rule_works_against_a_real_gateway(
    failing_first_mock, start_gateway
):
    if shutil.which("prometheus") is None:
        pytest.skip("the `prometheus` binary is not installed (Debian: apt-get install prometheus)")
    check_deploy = load_check_deploy()
    port = free_port()
    mock = failing_first_mock
    gw = start_gateway(
        mock,
        "openai",
        WARDGATE_METRICS_LISTEN=f"127.0.0.1:{port}",
        WARDGATE_PHI_MODE="deidentify",
        # Low enough that the bad-key requests below lock 127.0.0.1 out (a lockout never
        # refuses a valid credential, so the rest of the traffic still goes through).
        WARDGATE_LOCKOUT_THRESHOLD="3",
    )
    # The listener answers in the Prometheus text format before any traffic.
    first = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert first.status_code == 200, first.text
    assert "wardgate_build_info" in first.text

    # The mock's first two inference requests fail: backend errors (error_type).
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            gw.openai().chat.completions.create(
                model=MODEL_A, messages=[{"role": "user", "content": "hi"}]
            )
    dash = json.loads((REPO_ROOT / check_deploy.DASHBOARD).read_text())
    queries = check_deploy.dashboard_queries(dash)
    # Traffic goes on while Prometheus scrapes: a quantile of rates needs events between two
    # scrapes, not only before the first.
    stop = threading.Event()
    errors: list[BaseException] = []

    def traffic() -> None:
        while not stop.is_set():
            try:
                drive_traffic(gw)
            except BaseException as err:  # reported below, not lost in the thread
                errors.append(err)
                return
            stop.wait(0.3)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        missing, broken, died = check_deploy.prometheus_data(
            str(REPO_ROOT), f"127.0.0.1:{port}", queries, timeout=25
        )
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not errors, errors
    assert not died, died
    assert not broken, "alert rules not healthy:\n" + "\n".join(broken)
    unexpected = [q for q in missing if (q[0], q[1]) not in EMPTY_FOR_A_GATEWAY_ALONE]
    exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert not unexpected, (
        "dashboard queries without data:\n"
        + "\n".join(f"{t} ({r}): {e}" for t, r, e in unexpected)
        + f"\n\nexposition:\n{exposition[-6000:]}"
    )
    # The traffic left the marks the panels above show, not only zero-valued series.
    assert counter(exposition, "wardgate_lockouts_total") >= 1
    assert counter(exposition, "wardgate_auth_failures_total") >= 4
    assert counter(exposition, 'wardgate_phi_findings_total{category="SSN",mode="deidentify"}') >= 1
    assert 'error_type="backend_error"' in exposition
    assert counter(
        exposition,
        'wardgate_requests_total{route="/v1/chat/completions",model="_unknown",'
        'status_class="4xx",tenant="e2e"}',
    ) >= 1
    # The allowlist stays honest: a panel it names that has data now is taken off it.
    titles_missing = {(q[0], q[1]) for q in missing}
    has_data = sorted(set(EMPTY_FOR_A_GATEWAY_ALONE) - titles_missing)
    assert not has_data, f"panels allowed to be empty have data; drop them: {has_data}"
