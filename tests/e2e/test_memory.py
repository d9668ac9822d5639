"""Issue 15, item 2: memory per request body, measured on the real `wardgate serve` process.

A body up to the 4 MiB limit, of the shapes that used to cost the most (objects nested 121 deep
in `tools` or `response_format`, many small values), raises the gateway's peak RSS (`VmHWM`) by
at most 16 times its size; 16 such requests at once keep it under 1 GiB; and the RSS falls back
after them. The peak is reset before each measurement through `/proc/PID/clear_refs` (Linux).
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import pytest

from conftest import MODEL_A

LIMIT = 4 << 20
MIB = 1 << 20


def proc_status(pid: int, field: str) -> int:
    """A `/proc/PID/status` field, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def chat_body(size: int, extra: str) -> bytes:
    """A chat body of exactly `size` bytes: `extra` (JSON members) and a padding string in a
    field the gateway skips (a long message would be refused for the context window before
    anything is forwarded)."""
    head = (
        f'{{"model":"{MODEL_A}","max_tokens":4,"messages":[{{"role":"user","content":"hi"}}],'
        f'{extra}"pad":"'
    )
    tail = '"}'
    pad = size - len(head) - len(tail)
    assert pad >= 0, "the bulky part does not fit the size"
    return (head + "x" * pad + tail).encode()


def nested(depth: int) -> str:
    return '{"a":' * depth + "{}" + "}" * depth


def repeated(item: str, size: int) -> str:
    return ",".join([item] * max(1, size // (len(item) + 1)))


def shapes() -> dict[str, bytes]:
    deep = nested(120)
    tool = f'{{"type":"function","function":{{"name":"f","parameters":{deep}}}}}'
    bulk = LIMIT - 1024
    return {
        "tools nested 121 deep": chat_body(LIMIT, f'"tools":[{repeated(tool, bulk)}],'),
        "response_format nested 121 deep": chat_body(
            LIMIT,
            '"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"a":['
            + repeated(deep, bulk)
            + "]}}},",
        ),
        "tools nested, under the value bound": chat_body(
            LIMIT, f'"tools":[{repeated(tool, 1 * MIB)}],'
        ),
        "many small values, under the value bound": chat_body(
            LIMIT, f'"tools":[{repeated("0", 480_000)}],'
        ),
        "many small values": chat_body(LIMIT, f'"x":[{repeated("0", bulk)}],'),
        "one long string": chat_body(LIMIT, ""),
    }


def post(gw, body: bytes) -> int:
    with httpx.Client(timeout=60.0) as client:
        r = client.post(
            f"{gw.url}/v1/chat/completions",
            content=body,
            headers={"Authorization": f"Bearer {gw.key}", "Content-Type": "application/json"},
        )
        return r.status_code


def test_request_bodies_cost_memory_in_proportion_and_it_is_returned(start_gateway, mock):
    gw = start_gateway(mock, "openai")
    pid = gw.proc.pid
    # Warm up: what every request reuses is allocated once.
    assert post(gw, chat_body(2048, "")) == 200
    for name, body in shapes().items():
        assert len(body) <= LIMIT
        reset_peak(pid)
        before = proc_status(pid, "VmRSS")
        status = post(gw, body)
        assert status in (200, 400), f"{name}: {status}"
        rise = proc_status(pid, "VmHWM") - before
        assert rise <= 16 * len(body), (
            f"{name}: the peak RSS rose {rise / MIB:.1f} MiB for a {len(body) / MIB:.1f} MiB body"
        )

    worst = shapes()["tools nested, under the value bound"]
    idle = proc_status(pid, "VmRSS")
    reset_peak(pid)
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: post(gw, worst), range(16)))
    assert all(s in (200, 400) for s in statuses), statuses
    peak = proc_status(pid, "VmHWM")
    assert peak < 1024 * MIB, f"16 requests at once peaked at {peak / MIB:.1f} MiB"
    # The memory is returned: within a few seconds the RSS is back near where it was.
    deadline = time.monotonic() + 5.0
    while True:
        now = proc_status(pid, "VmRSS")
        if now <= idle + 64 * MIB or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert now <= idle + 64 * MIB, (
        f"RSS {now / MIB:.1f} MiB after the burst, {idle / MIB:.1f} MiB before (peak {peak / MIB:.1f})"
    )
    # And the gateway still serves.
    assert post(gw, chat_body(2048, "")) == 200


if not Path("/proc/self/clear_refs").exists():  # pragma: no cover - Linux only
    pytestmark = pytest.mark.skip(reason="needs /proc/PID/clear_refs (Linux)")
