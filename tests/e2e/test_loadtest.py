"""The Locust kit in deploy/loadtest/ runs headless against a real gateway and judges the run.

A short, scaled-down run (20 users for 10 s instead of 100 users for as long as an operator
likes), so it costs seconds: it proves the locustfile speaks the gateway's API (plain and
streamed chat with a real key), writes Locust's CSV, and passes against the seed's service
levels when the backend is fast.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

from conftest import MODEL_A, REPO_ROOT, GatewayFactory, MockUpstream

LOCUSTFILE = REPO_ROOT / "deploy/loadtest/locustfile.py"


def test_locust_kit_passes_the_service_levels(
    start_gateway: GatewayFactory, mock: MockUpstream, tmp_path: Path
) -> None:
    gw = start_gateway(mock, "openai")
    env = dict(
        os.environ,
        LOADTEST_API_KEY=gw.key,
        LOADTEST_MODEL=MODEL_A,
        # 20 users at 15 a minute each: 300 a minute, under the key's default 600 limit.
        LOADTEST_RPM_PER_USER="15",
        LOADTEST_STREAM_SHARE="0.3",
    )
    out = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "-u", "20", "-r", "20", "-t", "10s", "--stop-timeout", "5",
            "--host", gw.url, "--csv", str(tmp_path / "run"), "--only-summary",
        ],
        env=env, capture_output=True, text=True, timeout=60,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "wardgate load test: PASS" in text, text[-4000:]
    with (tmp_path / "run_stats.csv").open() as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    # Both kinds of request were made and every one succeeded.
    for name in ("chat", "chat (stream, whole)"):
        assert int(rows[name]["Request Count"]) > 0, rows
        assert int(rows[name]["Failure Count"]) == 0, rows
