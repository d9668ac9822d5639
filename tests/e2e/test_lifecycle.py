"""Process-level behaviour that needs its own gateway: draining on SIGTERM, the per-key rate
limit and the whole-request timeout."""

from __future__ import annotations

import signal

import openai
import pytest

from conftest import MODEL_A, start_mock

SLOW_TOKENS = 10


@pytest.fixture(scope="module")
def slow_mock(tmp_path_factory):
    """A mock that takes about a second per reply, so a stream is still open when we act."""
    upstream = start_mock(tmp_path_factory, "--token-delay-ms", "100", tokens=SLOW_TOKENS)
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def slow_first_token_mock(tmp_path_factory):
    """A mock that sits on every reply for longer than the gateway will wait."""
    upstream = start_mock(tmp_path_factory, "--first-token-delay-ms", "5000")
    yield upstream
    upstream.stop()


@pytest.mark.parametrize("backend_kind", ["ollama", "openai"])
def test_sigterm_drains_open_stream(slow_mock, start_gateway, backend_kind):
    gw = start_gateway(slow_mock, backend_kind)
    stream = gw.openai().chat.completions.create(
        model=MODEL_A, messages=[{"role": "user", "content": "Go on."}], stream=True
    )
    text = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            break  # The stream is open and producing: now ask the gateway to stop.
    gw.proc.send_signal(signal.SIGTERM)
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text == "".join(f"tok{i} " for i in range(SLOW_TOKENS))
    assert gw.proc.wait(timeout=10) == 0


def chat(client: openai.OpenAI):
    return client.chat.completions.create(
        model=MODEL_A, messages=[{"role": "user", "content": "echo:ok"}]
    )


def test_rate_limit_is_429(mock, start_gateway):
    # The limit counts requests per key (the model listings and details count too).
    gw = start_gateway(mock, "ollama", WARDGATE_RATE_LIMIT_RPM="2")
    client = gw.openai()
    for _ in range(2):
        assert chat(client).choices[0].message.content == "ok"
    with pytest.raises(openai.RateLimitError) as err:
        chat(client)
    assert err.value.status_code == 429
    assert err.value.code == "rate_limit_exceeded"
    retry_after = err.value.response.headers.get("retry-after")
    assert retry_after is not None and int(retry_after) > 0
    # The limit is per key: a second key still gets through.
    assert chat(gw.openai(gw.create_key(tenant="other")["key"])).choices[0].message.content == "ok"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_silent_backend_is_504(slow_first_token_mock, start_gateway, stream):
    # The first-token timeout may not exceed the request timeout, so both are set.
    gw = start_gateway(
        slow_first_token_mock,
        "ollama",
        WARDGATE_REQUEST_TIMEOUT="1s",
        WARDGATE_FIRST_TOKEN_TIMEOUT="1s",
    )
    with pytest.raises(openai.APIStatusError) as err:
        gw.openai().chat.completions.create(
            model=MODEL_A, messages=[{"role": "user", "content": "hi"}], stream=stream
        )
    assert err.value.status_code == 504
    assert err.value.code == "timeout"
