"""The in-process engine (llama.cpp inside) on real small models, end to end.

Three deployments, each driven by the official `openai` and `ollama` clients:

* single service: `wardgate serve` with the embedded engine (no `WARDGATE_BACKEND`);
* dual service: the private `wardgate llm` (HMAC-signed requests only) behind `wardgate serve`
  with `WARDGATE_BACKEND=ollama:...` and `WARDGATE_BACKEND_SECRET`;
* two models on two `wardgate llm` processes behind one gateway config, with a fallback chain.

The models come from the store that `scripts/fetch-test-models` fills (`smollm2:135m`, a chat
model, and `gemma3:270m`, a base model); `WARDGATE_TEST_MODELS` names it and every process
here points `WARDGATE_MODELS` at it. The engine only reads that store (and `wardgate serve`
fetches the default model only into an empty one), so nothing is copied. Without
`WARDGATE_TEST_MODELS` the whole module is skipped; `scripts/test` always sets it.

Answers are checked at temperature 0 with few tokens: SmolLM2-135M reliably answers "Paris" to
the capital-of-France question, which is what the checks below rely on.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Iterator

import httpx
import ollama
import openai
import pytest

from conftest import WARDGATE_BIN, Gateway, LoggedProcess, _stop, clean_env, free_port, run_wardgate

MODELS_ENV = "WARDGATE_TEST_MODELS"
MODELS_DIR = os.environ.get(MODELS_ENV, "")

pytestmark = pytest.mark.skipif(
    not MODELS_DIR,
    reason=f"{MODELS_ENV} is unset: run scripts/fetch-test-models and set {MODELS_ENV} to its "
    "model store (scripts/test does both)",
)

SMOLLM2 = "smollm2:135m"
GEMMA = "gemma3:270m"
MINILM = "all-minilm:l6-v2"
QUESTION = "What is the capital of France?"
# For the base model, which continues text rather than answering chats.
GEMMA_QA_PROMPT = f"Question: {QUESTION}\nAnswer:"
COMPLETION_PROMPT = "The capital of France is"
MAX_TOKENS = 24

# Loading a model takes seconds; on a busy 2-core machine, a generation may take several.
LOAD_TIMEOUT_S = 120.0
CLIENT_TIMEOUT_S = 90.0
TIMEOUT_ENV = {"WARDGATE_REQUEST_TIMEOUT": "60s", "WARDGATE_FIRST_TOKEN_TIMEOUT": "30s"}


def new_secret() -> str:
    """An HMAC secret for `wardgate llm` (at least 32 characters)."""
    return secrets.token_hex(32)


def json_records(text: str) -> list[dict]:
    """The JSON log lines of a process's stderr (other lines, e.g. a panic, are skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def request_records(text: str, model: str | None = None) -> list[dict]:
    """The per-request log lines (`"message": "request"`), optionally for one public model."""
    return [
        r
        for r in json_records(text)
        if r.get("message") == "request"
        and "backend" in r
        and (model is None or r.get("model") == model)
    ]


def refusals(text: str) -> list[dict]:
    return [
        r
        for r in json_records(text)
        if r.get("message") == "refused an unsigned or badly signed request"
    ]


def wait_for(proc: subprocess.Popen, url: str, what: str, logs, timeout: float) -> None:
    """Polls `url` until it answers 200; fails with the process's stderr otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"{what} exited with {proc.returncode}; stderr:\n{logs()[-8000:]}")
            try:
                resp = client.get(url)
                if resp.status_code == 200:
                    return
                last = f"{resp.status_code} {resp.text}"
            except httpx.TransportError as err:
                last = repr(err)
            time.sleep(0.1)
    _stop(proc)
    pytest.fail(
        f"{what}: {url} not 200 within {timeout}s (last: {last}); stderr:\n{logs()[-8000:]}"
    )


@pytest.fixture(scope="module")
def models_dir() -> Path:
    """The shared model store; it must hold both test models."""
    path = Path(MODELS_DIR).resolve()
    result = run_wardgate("models", "list", "--json", env=clean_env(WARDGATE_MODELS=str(path)))
    assert result.returncode == 0, f"wardgate models list failed:\n{result.stderr}"
    listed = json.loads(result.stdout)
    missing = [m for m in (SMOLLM2, GEMMA, MINILM) if m not in listed]
    if missing:
        pytest.fail(
            f"{MODELS_ENV}={path} lacks {missing}: run scripts/fetch-test-models {path}"
        )
    return path


# -- processes ---------------------------------------------------------------------------------


class LlmService(LoggedProcess):
    """A running `wardgate llm` on a free port, serving the models in `models_dir`."""

    def __init__(
        self, tmp: Path, models_dir: Path, secret: str, preload: str, name: str = "llm"
    ) -> None:
        self.name = name
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = clean_env(
            WARDGATE_LLM_LISTEN=f"127.0.0.1:{port}",
            WARDGATE_LLM_SECRET=secret,
            # The service's own database: its audit log of the signed requests it serves.
            WARDGATE_DB=str(tmp / f"{name}.db"),
            WARDGATE_MODELS=str(models_dir),
            WARDGATE_PRELOAD=preload,
            WARDGATE_LOG_FORMAT="json",
            WARDGATE_LOG="info",
            **TIMEOUT_ENV,
        )
        self.stderr_path = tmp / f"{name}.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [str(WARDGATE_BIN), "llm"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=self.env,
        )
        # `/ready` needs no signature and is 503 until the preloaded model is in memory.
        wait_for(
            self.proc, f"{self.url}/ready", f"wardgate llm ({name})", self.logs, LOAD_TIMEOUT_S
        )



class EngineGateway(Gateway):
    """A running `wardgate serve` configured by environment (and optionally a config file)
    rather than over the mock; reuses `Gateway`'s key, CLI, client, log and teardown helpers."""

    client_timeout = CLIENT_TIMEOUT_S

    def __init__(
        self,
        tmp: Path,
        extra_env: dict[str, str],
        config: str | None = None,
        ready_path: str = "/ready",
    ) -> None:
        self.backend_kind = "engine"
        self.tmp = tmp
        self.db = tmp / "wardgate.db"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = dict(
            WARDGATE_DB=str(self.db),
            WARDGATE_LISTEN=f"127.0.0.1:{port}",
            WARDGATE_LOG_FORMAT="json",
            WARDGATE_LOG="info",
            **TIMEOUT_ENV,
        )
        if config is not None:
            path = tmp / "wardgate.toml"
            path.write_text(config)
            env["WARDGATE_CONFIG"] = str(path)
        env.update(extra_env)
        self.env = clean_env(**env)
        self.key_record = self.create_key(tenant="e2e-engine")
        self.key = self.key_record["key"]
        self._spawn_serve()
        wait_for(self.proc, f"{self.url}{ready_path}", "wardgate serve", self.logs, LOAD_TIMEOUT_S)


def openai_chat(gw: Gateway, model: str, content: str = QUESTION) -> str:
    resp = gw.openai().chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        temperature=0,
        max_tokens=MAX_TOKENS,
    )
    assert resp.choices, resp
    return resp.choices[0].message.content or ""


def ollama_chat(gw: Gateway, model: str, content: str = QUESTION) -> str:
    resp = gw.ollama().chat(
        model=model,
        messages=[{"role": "user", "content": content}],
        options={"temperature": 0, "num_predict": MAX_TOKENS},
    )
    assert resp.done is True
    assert resp.message.role == "assistant"
    return resp.message.content or ""


def ollama_generate(
    gw: Gateway, model: str, prompt: str, raw: bool = False
) -> ollama.GenerateResponse:
    resp = gw.ollama().generate(
        model=model,
        prompt=prompt,
        raw=raw,
        options={"temperature": 0, "num_predict": MAX_TOKENS},
    )
    assert resp.done is True
    return resp


# -- a. single service: `wardgate serve` with the embedded engine ----------------------------


# Fixtures of scope "class" live as long as the one test class that uses them, so each
# deployment's processes are gone before the next class starts its own.


@pytest.fixture(scope="class")
def single_gw(tmp_path_factory, models_dir) -> Iterator[EngineGateway]:
    gw = EngineGateway(
        tmp_path_factory.mktemp("engine-single"),
        {"WARDGATE_MODELS": str(models_dir), "WARDGATE_PRELOAD": SMOLLM2},
    )
    yield gw
    assert gw.stop() == 0, gw.logs()[-4000:]


class TestSingleService:
    @pytest.fixture
    def gw(self, single_gw) -> EngineGateway:
        return single_gw

    def test_openai_chat(self, gw):
        resp = gw.openai().chat.completions.create(
            model=SMOLLM2,
            messages=[{"role": "user", "content": QUESTION}],
            temperature=0,
            max_tokens=MAX_TOKENS,
        )
        assert "Paris" in (resp.choices[0].message.content or ""), resp
        assert resp.model == SMOLLM2
        assert resp.usage is not None and resp.usage.completion_tokens > 0
        assert resp.usage.prompt_tokens > 0
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens

    def test_openai_chat_stream_include_usage(self, gw):
        stream = gw.openai().chat.completions.create(
            model=SMOLLM2,
            messages=[{"role": "user", "content": QUESTION}],
            temperature=0,
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "Paris" in text, text
        # More than one content chunk: the answer really streams.
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
        last = chunks[-1]
        assert last.choices == []
        assert last.usage is not None and last.usage.completion_tokens > 0
        assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
        assert all(c.usage is None for c in chunks[:-1])

    def test_ollama_chat(self, gw):
        assert "Paris" in ollama_chat(gw, SMOLLM2)

    def test_ollama_generate(self, gw):
        # Ollama's /api/generate formats the prompt with the model's template unless `raw`
        # is set, so an instruct model answers a question asked this way.
        resp = ollama_generate(gw, SMOLLM2, QUESTION)
        assert "Paris" in resp.response, resp

    def test_ollama_generate_raw(self, gw):
        resp = ollama_generate(gw, SMOLLM2, COMPLETION_PROMPT, raw=True)
        assert "Paris" in resp.response, resp
        assert resp.eval_count and resp.eval_count > 0

    def test_embeddings_from_a_real_model_through_both_fronts(self, gw):
        texts = ["A cat sits on the mat.", "A kitten is sitting on a rug.", "The stock market crashed today."]
        # Left unset, the official client asks for base64 and decodes it; ask for floats too.
        for fmt in (openai.NOT_GIVEN, "float"):
            resp = gw.openai().embeddings.create(model=MINILM, input=texts, encoding_format=fmt)
            vecs = [d.embedding for d in resp.data]
            assert [len(v) for v in vecs] == [384, 384, 384], fmt
            for v in vecs:
                assert abs(sum(x * x for x in v) ** 0.5 - 1.0) < 1e-3, "L2-normalised"
            dot = lambda a, b: sum(x * y for x, y in zip(a, b))
            similar, unrelated = dot(vecs[0], vecs[1]), dot(vecs[0], vecs[2])
            assert similar > unrelated + 0.3, (similar, unrelated)
            assert resp.usage.prompt_tokens > 0
        out = gw.ollama().embed(model=MINILM, input="A cat sits on the mat.")
        assert len(out.embeddings) == 1 and len(out.embeddings[0]) == 384
        first = gw.openai().embeddings.create(model=MINILM, input=texts[0], encoding_format="float")
        assert max(abs(a - b) for a, b in zip(out.embeddings[0], first.data[0].embedding)) < 1e-5
        legacy = gw.ollama().embeddings(model=MINILM, prompt="A cat sits on the mat.")
        assert len(legacy.embedding) == 384

    def test_a_chat_model_embeds_and_an_embedding_model_refuses_chat(self, gw):
        # As Ollama does, a chat model embeds too: its hidden states pooled (mean, unless the
        # model declares a pooling), L2-normalised; both fronts give the same vector.
        first = gw.openai().embeddings.create(model=SMOLLM2, input="A cat sits on the mat.", encoding_format="float")
        vec = first.data[0].embedding
        assert len(vec) == 576, len(vec)  # SmolLM2-135M's hidden size
        assert abs(sum(x * x for x in vec) - 1.0) < 1e-3
        out = gw.ollama().embed(model=SMOLLM2, input="A cat sits on the mat.")
        assert max(abs(a - b) for a, b in zip(out.embeddings[0], vec)) < 1e-4
        with pytest.raises(openai.BadRequestError):
            gw.openai().chat.completions.create(model=MINILM, messages=[{"role": "user", "content": "x"}])

    def test_tags_and_models_list_the_store(self, gw):
        names = [m.model for m in gw.ollama().list().models]
        assert SMOLLM2 in names, names
        ids = [m.id for m in gw.openai().models.list()]
        assert SMOLLM2 in ids, ids

    def test_request_log_names_the_model(self, gw):
        before = len(request_records(gw.logs(), SMOLLM2))
        openai_chat(gw, SMOLLM2)
        records = request_records(gw.logs(), SMOLLM2)[before:]
        assert len(records) == 1, gw.logs()[-4000:]
        rec = records[0]
        assert rec["status"] == 200, rec
        assert rec["route"] == "/v1/chat/completions"
        assert rec["upstream_model"] == SMOLLM2
        assert rec["tokens_in"] > 0 and rec["tokens_out"] > 0, rec
        # The prompt and the answer are never logged.
        assert "France" not in gw.logs() and "Paris" not in gw.logs()


# -- b. dual service: `wardgate llm` behind `wardgate serve`, HMAC-signed -----------------------


@pytest.fixture(scope="class")
def dual_secret() -> str:
    return new_secret()


@pytest.fixture(scope="class")
def dual_llm(tmp_path_factory, models_dir, dual_secret) -> Iterator[LlmService]:
    svc = LlmService(tmp_path_factory.mktemp("engine-llm"), models_dir, dual_secret, SMOLLM2)
    yield svc
    assert svc.stop() == 0, svc.logs()[-4000:]


@pytest.fixture(scope="class")
def dual_gw(tmp_path_factory, dual_llm, dual_secret) -> Iterator[EngineGateway]:
    gw = EngineGateway(
        tmp_path_factory.mktemp("engine-signed"),
        {"WARDGATE_BACKEND": f"ollama:{dual_llm.url}", "WARDGATE_BACKEND_SECRET": dual_secret},
    )
    yield gw
    assert gw.stop() == 0, gw.logs()[-4000:]


class TestDualService:
    @pytest.fixture
    def secret(self, dual_secret) -> str:
        return dual_secret

    @pytest.fixture
    def llm(self, dual_llm) -> LlmService:
        return dual_llm

    @pytest.fixture
    def gw(self, dual_gw) -> EngineGateway:
        return dual_gw

    def test_openai_chat(self, gw, llm):
        assert "Paris" in openai_chat(gw, SMOLLM2)
        assert refusals(llm.logs()) == []

    def test_ollama_chat(self, gw, llm):
        assert "Paris" in ollama_chat(gw, SMOLLM2)
        assert refusals(llm.logs()) == []

    def test_openai_stream(self, gw):
        stream = gw.openai().chat.completions.create(
            model=SMOLLM2,
            messages=[{"role": "user", "content": QUESTION}],
            temperature=0,
            max_tokens=MAX_TOKENS,
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert "Paris" in text, text

    def test_secret_is_never_logged(self, gw, llm, secret):
        openai_chat(gw, SMOLLM2)
        assert secret not in gw.logs()
        assert secret not in llm.logs()

    @pytest.mark.parametrize("path", ["/api/tags", "/api/version", "/", "/api/nonexistent"])
    def test_llm_refuses_unsigned_get(self, llm, path):
        before = len(refusals(llm.logs()))
        resp = httpx.get(f"{llm.url}{path}", timeout=10)
        assert resp.status_code == 401, resp.text
        after = refusals(llm.logs())
        assert len(after) == before + 1, llm.logs()[-4000:]
        assert after[-1]["path"] == path
        assert after[-1].get("reason")

    def test_llm_refuses_unsigned_chat(self, llm):
        before = len(refusals(llm.logs()))
        resp = httpx.post(
            f"{llm.url}/api/chat",
            json={
                "model": SMOLLM2,
                "messages": [{"role": "user", "content": QUESTION}],
                "stream": False,
            },
            timeout=10,
        )
        assert resp.status_code == 401, resp.text
        assert "Paris" not in resp.text
        after = refusals(llm.logs())
        assert len(after) == before + 1
        assert after[-1]["method"] == "POST" and after[-1]["path"] == "/api/chat"

    def test_llm_probes_need_no_signature(self, llm):
        assert httpx.get(f"{llm.url}/health", timeout=10).status_code == 200
        assert httpx.get(f"{llm.url}/ready", timeout=10).status_code == 200

    @pytest.mark.parametrize("how", ["env", "config"])
    def test_gateway_with_wrong_secret_is_refused(self, tmp_path_factory, llm, secret, how):
        """A gateway holding the wrong secret: `wardgate llm` refuses its calls (and says so),
        and the client sees a server-side error, not an answer and not a 4xx blaming it."""
        wrong = new_secret()
        assert wrong != secret
        tmp = tmp_path_factory.mktemp(f"engine-wrong-secret-{how}")
        if how == "env":
            # WARDGATE_BACKEND discovers the llm's models, so the model is not configured here.
            env = {"WARDGATE_BACKEND": f"ollama:{llm.url}", "WARDGATE_BACKEND_SECRET": wrong}
            config = None
        else:
            # An explicit chain: the gateway must call the llm for the request.
            env = {"E2E_WRONG_LLM_SECRET": wrong}
            config = (
                f'[[backends]]\nname = "a"\nkind = "ollama"\nurl = "{llm.url}"\n'
                f'secret_env = "E2E_WRONG_LLM_SECRET"\n\n'
                f'[[models]]\nname = "{SMOLLM2}"\n'
                f'chain = [{{ backend = "a", model = "{SMOLLM2}" }}]\n'
            )
        before = len(refusals(llm.logs()))
        # Not ready (no backend answers it), but alive.
        gw = EngineGateway(tmp, env, config=config, ready_path="/health")
        try:
            ready = gw.http(auth=False).get("/ready")
            assert ready.status_code == 503, ready.text
            with pytest.raises(openai.APIStatusError) as err:
                openai_chat(gw, SMOLLM2)
            assert err.value.status_code >= 500, (
                f"{how}: expected a 5xx, got {err.value.status_code}: {err.value.response.text}"
            )
            with pytest.raises(ollama.ResponseError) as oerr:
                ollama_chat(gw, SMOLLM2)
            assert oerr.value.status_code >= 500, (
                f"{how}: expected a 5xx, got {oerr.value.status_code}: {oerr.value.error}"
            )
        finally:
            gw.stop()
        new = refusals(llm.logs())[before:]
        assert new, f"the llm logged no refusal; its stderr:\n{llm.logs()[-4000:]}"
        assert any(r.get("reason") == "signature does not match" for r in new), new
        assert wrong not in gw.logs() and wrong not in llm.logs()


# -- c. two models on two `wardgate llm` processes, with a fallback chain ---------------------


@pytest.fixture(scope="class")
def pair_secrets() -> tuple[str, str]:
    return new_secret(), new_secret()


@pytest.fixture(scope="class")
def llm_a(tmp_path_factory, models_dir, pair_secrets) -> Iterator[LlmService]:
    svc = LlmService(
        tmp_path_factory.mktemp("engine-llm-a"), models_dir, pair_secrets[0], SMOLLM2, "llm-a"
    )
    yield svc
    svc.stop()


@pytest.fixture(scope="class")
def llm_b(tmp_path_factory, models_dir, pair_secrets) -> Iterator[LlmService]:
    svc = LlmService(
        tmp_path_factory.mktemp("engine-llm-b"), models_dir, pair_secrets[1], GEMMA, "llm-b"
    )
    yield svc
    assert svc.stop() == 0, svc.logs()[-4000:]


@pytest.fixture(scope="class")
def pair_gw(tmp_path_factory, llm_a, llm_b, pair_secrets) -> Iterator[EngineGateway]:
    config = f"""
[[backends]]
name = "a"
kind = "ollama"
url = "{llm_a.url}"
secret_env = "E2E_LLM_A_SECRET"

[[backends]]
name = "b"
kind = "ollama"
url = "{llm_b.url}"
secret_env = "E2E_LLM_B_SECRET"

[[models]]
name = "smollm2"
chain = [{{ backend = "a", model = "{SMOLLM2}" }}]

[[models]]
name = "gemma"
chain = [{{ backend = "b", model = "{GEMMA}" }}]

[[models]]
name = "chat"
chain = [
  {{ backend = "a", model = "{SMOLLM2}" }},
  {{ backend = "b", model = "{GEMMA}" }},
]
"""
    gw = EngineGateway(
        tmp_path_factory.mktemp("engine-two-models"),
        {"E2E_LLM_A_SECRET": pair_secrets[0], "E2E_LLM_B_SECRET": pair_secrets[1]},
        config=config,
    )
    yield gw
    assert gw.stop() == 0, gw.logs()[-4000:]


class TestTwoModels:
    """llm A preloads SmolLM2, llm B preloads Gemma; both read the same store (each serves
    whatever its store holds; the gateway's chains decide which model is asked of which)."""

    @pytest.fixture
    def gw(self, pair_gw) -> EngineGateway:
        return pair_gw

    def last_request(self, gw: EngineGateway, model: str) -> dict:
        records = request_records(gw.logs(), model)
        assert records, f"no request line for {model}:\n{gw.logs()[-4000:]}"
        return records[-1]

    def test_models_are_listed(self, gw):
        ids = {m.id for m in gw.openai().models.list()}
        assert {"smollm2", "gemma", "chat"} <= ids, ids

    def test_routes_by_model_name(self, gw, llm_a, llm_b):
        small = ollama_generate(gw, "smollm2", COMPLETION_PROMPT, raw=True).response
        rec = self.last_request(gw, "smollm2")
        assert (rec["backend"], rec["upstream_model"], rec["status"]) == ("a", SMOLLM2, 200), rec

        big = ollama_generate(gw, "gemma", COMPLETION_PROMPT, raw=True).response
        rec = self.last_request(gw, "gemma")
        assert (rec["backend"], rec["upstream_model"], rec["status"]) == ("b", GEMMA, 200), rec

        assert small.strip() and big.strip()
        # Two different models, greedy on the same prompt: different continuations.
        assert small != big, (small, big)
        assert refusals(llm_a.logs()) == [] and refusals(llm_b.logs()) == []

    def test_base_model_answers_generate(self, gw):
        resp = ollama_generate(gw, "gemma", GEMMA_QA_PROMPT, raw=True)
        assert "Paris" in resp.response, resp
        resp = gw.openai().completions.create(
            model="gemma", prompt=GEMMA_QA_PROMPT, max_tokens=MAX_TOKENS, temperature=0
        )
        assert "Paris" in resp.choices[0].text, resp

    def test_chain_prefers_its_first_link(self, gw):
        assert "Paris" in openai_chat(gw, "chat")
        rec = self.last_request(gw, "chat")
        assert (rec["backend"], rec["upstream_model"]) == ("a", SMOLLM2), rec

    def test_falls_back_when_the_first_backend_dies(self, gw, llm_a, llm_b):
        # Must run last in this class: it stops llm A.
        assert llm_a.stop() == 0, llm_a.logs()[-4000:]
        answer = openai_chat(gw, "chat")
        assert answer.strip(), answer
        rec = self.last_request(gw, "chat")
        assert rec["status"] == 200, rec
        assert (rec["backend"], rec["upstream_model"]) == ("b", GEMMA), rec
        # Gemma, asked as a chat (rendered as `User: ...` lines), still knows.
        assert "Paris" in answer, answer
        # The Ollama client too, and `smollm2` (no fallback) now fails server-side.
        assert "Paris" in ollama_chat(gw, "chat")
        with pytest.raises(openai.APIStatusError) as err:
            openai_chat(gw, "smollm2")
        assert err.value.status_code >= 500, err.value.response.text
