"""A model server that fails: the clients see an error, never a reply that silently stops
short. Each gateway here makes at most two failing requests, below the circuit breaker's
threshold, so each test sees the failure itself rather than an open breaker."""

from __future__ import annotations

import ollama
import openai
import pytest

from conftest import BACKEND_KINDS, MODEL_A, start_mock

USER = [{"role": "user", "content": "Say something."}]
DROP_AFTER = 3


@pytest.fixture(scope="module")
def dropping_mock(tmp_path_factory):
    upstream = start_mock(tmp_path_factory, "--drop-after", str(DROP_AFTER))
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def failing_mock(tmp_path_factory):
    upstream = start_mock(tmp_path_factory, "--fail-status", "503")
    yield upstream
    upstream.stop()


@pytest.mark.parametrize("backend_kind", BACKEND_KINDS)
def test_stream_cut_midway_is_an_error(dropping_mock, start_gateway, backend_kind):
    gw = start_gateway(dropping_mock, backend_kind)

    text = ""
    with pytest.raises(openai.APIError):
        for chunk in gw.openai().chat.completions.create(model=MODEL_A, messages=USER, stream=True):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text == "".join(f"tok{i} " for i in range(DROP_AFTER))

    text = ""
    with pytest.raises(ollama.ResponseError):
        for part in gw.ollama().chat(model=MODEL_A, messages=USER, stream=True):
            text += part.message.content or ""
    assert text == "".join(f"tok{i} " for i in range(DROP_AFTER))


@pytest.mark.parametrize("backend_kind", BACKEND_KINDS)
def test_unavailable_backend_is_5xx_with_a_generic_body(failing_mock, start_gateway, backend_kind):
    gw = start_gateway(failing_mock, backend_kind)
    with pytest.raises(openai.InternalServerError) as err:
        gw.openai().chat.completions.create(model=MODEL_A, messages=USER)
    assert err.value.status_code >= 500
    # The mock's own error text stays in the gateway's (redacted) log, not in the answer.
    assert "injected" not in str(err.value.body)

    with pytest.raises(ollama.ResponseError) as err:
        gw.ollama().chat(model=MODEL_A, messages=USER)
    assert err.value.status_code >= 500
    assert "injected" not in err.value.error
