"""`wardgate check-config` and start-up validation: a bad file or variable is refused with a
message that names the offending key, and nothing starts."""

from __future__ import annotations

import pytest

from conftest import REPO_ROOT, clean_env, run_wardgate

EXAMPLE = REPO_ROOT / "config/wardgate.example.toml"
BACKEND = """
[[backends]]
name = "local"
kind = "ollama"
url = "http://127.0.0.1:11434"
"""


def test_example_config_is_valid():
    result = run_wardgate("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{EXAMPLE}: ok (")


def test_minimal_config_is_valid(tmp_path):
    path = tmp_path / "min.toml"
    path.write_text(BACKEND)
    result = run_wardgate("check-config", str(path))
    assert result.returncode == 0, result.stderr


# (case id, file text, the key the error must name)
BAD_CONFIGS = [
    ("bad-duration", BACKEND + '[server]\nrequest_timeout = "banana"\n', "server.request_timeout"),
    ("bad-listen", BACKEND + '[server]\nlisten = "not an addr"\n', "server.listen"),
    ("bad-log-format", BACKEND + '[logging]\nformat = "xml"\n', "logging.format"),
    ("bad-over-cap", BACKEND + '[limits]\nover_cap = "maybe"\n', "limits.over_cap"),
    ("zero-body-limit", BACKEND + "[limits]\nmax_body_bytes = 0\n", "limits.max_body_bytes"),
    (
        "unknown-backend-kind",
        BACKEND.replace('"ollama"', '"carrier-pigeon"'),
        "backends[0].kind",
    ),
    ("bad-backend-url", BACKEND.replace('"http://127.0.0.1:11434"', '"nope"'), "backends[0].url"),
    (
        "chain-names-missing-backend",
        BACKEND + '[[models]]\nname = "m"\nchain = [{ backend = "nope", model = "y" }]\n',
        "models[0].chain[0].backend",
    ),
    # Errors found while deserialising (not in the validation pass) must name the key too.
    ("unknown-field", BACKEND + "[limits]\nmax_bodyy_bytes = 5\n", "limits.max_bodyy_bytes"),
    ("wrong-type", BACKEND + "[rate_limit]\nrequests_per_minute = -5\n", "rate_limit.requests_per_minute"),
]


@pytest.mark.parametrize(("text", "key"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = run_wardgate("check-config", str(path))
    assert result.returncode != 0
    assert f"config error at `{key}`" in result.stderr, result.stderr


def test_secret_in_config_is_refused_and_not_echoed(tmp_path):
    path = tmp_path / "secret.toml"
    path.write_text(BACKEND + 'api_key = "sk-do-not-print-me"\n')
    result = run_wardgate("check-config", str(path))
    assert result.returncode != 0
    assert "api_key" in result.stderr
    assert "sk-do-not-print-me" not in result.stderr + result.stdout


def test_unreadable_file_is_an_error(tmp_path):
    result = run_wardgate("check-config", str(tmp_path / "missing.toml"))
    assert result.returncode != 0
    assert "missing.toml" in result.stderr


@pytest.mark.parametrize(
    ("var", "value", "key"),
    [
        ("WARDGATE_BACKEND", "bogus", "WARDGATE_BACKEND"),
        ("WARDGATE_RATE_LIMIT_RPM", "lots", "WARDGATE_RATE_LIMIT_RPM"),
    ],
)
def test_serve_refuses_bad_env(tmp_path, var, value, key):
    env = clean_env(
        WARDGATE_DB=str(tmp_path / "db.sqlite"),
        WARDGATE_BACKEND="ollama:http://127.0.0.1:9",
        WARDGATE_LISTEN="127.0.0.1:0",
    )
    env[var] = value
    result = run_wardgate("serve", env=env, timeout=10)
    assert result.returncode != 0
    assert f"config error at `{key}`" in result.stderr, result.stderr
