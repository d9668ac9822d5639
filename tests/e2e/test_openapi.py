"""The OpenAPI document at `/openapi.json`, end to end: schemathesis generates requests for every
operation it lists (valid ones, then invalid ones), sends them to the real gateway over the
mock upstream with a key that reaches every route. No answer may be a server error or carry a
stack trace, and every answer must match the document (status, content type, body schema).

The run is bounded (a fixed number of examples per operation, derandomised so a failure
reproduces) to keep it well under a minute; every failure is collected and reported together.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

# Examples per operation and generation mode. 23 operations x (20 + 10) stays around 700 cases.
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}

# What a stack trace looks like in a body: Python's, and Rust's panic and backtrace lines.
STACK_TRACE = re.compile(
    r"Traceback \(most recent call last\)"
    r"|panicked at"
    r"|stack backtrace:"
    r"|RUST_BACKTRACE"
    r"|\bat [\w/.-]+\.rs:\d+"
    r'|File "[^"]+\.py", line \d+'
)

PUBLIC = {"/health", "/ready", "/openapi.json"}


@pytest.fixture
def gw(mock, start_gateway):
    """A gateway of its own: the run creates keys and tenants. No rate limit, so every case
    reaches its handler."""
    return start_gateway(mock, "ollama", WARDGATE_RATE_LIMIT_RPM="0", WARDGATE_RATE_LIMIT_TENANT_RPM="0")


def test_the_document_is_public_and_lists_no_model_management(gw):
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        r = http.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["openapi"].startswith("3.1.")
    for absent in ("/api/pull", "/api/push", "/api/create", "/api/delete", "/api/copy"):
        assert absent not in doc["paths"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            expected = None if path in PUBLIC else [{"bearer": []}]
            assert op.get("security") == expected, f"{method} {path}"
    assert gw.key not in r.text


def test_schemathesis_finds_no_server_error(gw):
    key = json.loads(
        gw.cli(
            "keys", "create", "--tenant", "operator", "--roles", "user,admin,auditor", "--json"
        ).stdout
    )["key"]
    auth = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_url(f"{gw.url}/openapi.json", timeout=10)
    session = requests.Session()
    # No 5xx, above all; and the document must be right about what comes back: documented
    # statuses and content types, bodies that match their schemas.
    checks = [
        st_checks.not_a_server_error,
        st_checks.status_code_conformance,
        st_checks.content_type_conformance,
        st_checks.response_schema_conformance,
    ]

    failures: list[str] = []
    cases = 0
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every route but the document itself (schemathesis leaves out the schema's own URL).
    assert len({(o.method, o.path) for o in operations}) == len(operations) == 25

    for operation in operations:
        for mode, examples in EXAMPLES.items():

            @given(case=operation.as_strategy(generation_mode=mode, headers=auth))
            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                # No shrinking: failures are collected, not raised, and shrinking costs time.
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                nonlocal cases
                cases += 1
                # The key must be the one sent whatever the generator made of the header.
                case.headers = {**(case.headers or {}), **auth}
                label = f"{mode.value} {case.operation.label}"
                try:
                    response = case.call(base_url=gw.url, session=session, timeout=10)
                except requests.RequestException as err:
                    failures.append(f"{label}: no answer ({err!r})\n  {case.as_curl_command()}")
                    return
                try:
                    case.validate_response(response, checks=checks)
                except AssertionError as err:
                    failures.append(f"{label}: {err}\n  {case.as_curl_command()}")
                if STACK_TRACE.search(response.text):
                    failures.append(
                        f"{label}: stack trace in the body ({response.status_code}): "
                        f"{response.text[:300]!r}\n  {case.as_curl_command()}"
                    )

            try:
                run()
            except Unsatisfiable:
                # An operation without parameters or body has nothing to make invalid.
                assert mode is GenerationMode.NEGATIVE, operation.label

    elapsed = time.monotonic() - started
    print(f"schemathesis: {cases} cases over {len(operations)} operations in {elapsed:.1f}s")
    assert cases >= len(operations) * 10, f"only {cases} cases ran"
    assert not failures, f"{len(failures)} failures of {cases} cases:\n" + "\n".join(failures[:20])
    # The gateway logged no panic while the run went on.
    assert "panicked" not in gw.logs()
