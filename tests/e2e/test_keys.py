"""API keys made, limited, revoked and expired with the real CLI, checked against a running
gateway (the backend kind does not matter here, so one gateway is enough)."""

from __future__ import annotations

import json
import time

import ollama
import openai
import pytest

from conftest import MODEL_A, MODEL_B


def chat(client: openai.OpenAI, model: str = MODEL_A):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "echo:ok"}]
    )


def test_created_key_shape(one_gateway):
    record = one_gateway.create_key(tenant="acme", models=[MODEL_A], expires="90d", label="e2e")
    assert set(record) >= {"id", "tenant", "key", "models", "expires_at"}
    assert record["tenant"] == "acme"
    assert record["models"] == [MODEL_A]
    assert record["expires_at"] > time.time() + 89 * 86400
    listed = json.loads(one_gateway.cli("keys", "list", "--tenant", "acme", "--json").stdout)
    ids = {k["id"] for k in listed}
    assert record["id"] in ids
    # Listing never shows a secret.
    assert record["key"] not in one_gateway.cli("keys", "list", "--json").stdout
    assert record["key"] not in one_gateway.cli("keys", "list").stdout


def test_revoked_key_is_401(one_gateway):
    record = one_gateway.create_key(tenant="revoke-me")
    client = one_gateway.openai(record["key"])
    assert chat(client).choices[0].message.content == "ok"
    one_gateway.cli("keys", "revoke", record["id"])
    # A verified key is trusted for auth.key_cache_ttl (2 s by default) without asking the
    # database again; the revocation must take effect within that bound.
    deadline = time.monotonic() + 2.0 + 1.5
    while True:
        try:
            chat(client)
        except openai.AuthenticationError as err:
            assert err.code == "invalid_api_key"
            break
        assert time.monotonic() < deadline, "revocation not effective within the cache TTL"
        time.sleep(0.1)
    listed = json.loads(one_gateway.cli("keys", "list", "--json").stdout)
    (entry,) = [k for k in listed if k["id"] == record["id"]]
    assert entry["revoked_at"] is not None
    # The ollama front refuses it too.
    with pytest.raises(ollama.ResponseError) as err:
        one_gateway.ollama(record["key"]).list()
    assert err.value.status_code == 401


def test_revoke_unknown_id_fails(one_gateway):
    result = one_gateway.cli("keys", "revoke", "key_does_not_exist", check=False)
    assert result.returncode != 0


def test_expired_key_is_401(one_gateway):
    created = time.monotonic()
    record = one_gateway.create_key(tenant="short-lived", expires="1s")
    client = one_gateway.openai(record["key"])
    if time.monotonic() - created < 0.5:
        # Only meaningful while the key is surely still inside its second (storage rounds a
        # lifetime up to whole seconds, never down).
        assert chat(client).choices[0].message.content == "ok"
    # Expiry is about wall-clock time, so this one wait is the thing under test: until just past
    # the instant the store says the key ends.
    time.sleep(max(0.0, record["expires_at"] - time.time()) + 0.3)
    with pytest.raises(openai.AuthenticationError) as err:
        chat(client)
    assert err.value.code == "invalid_api_key"


def test_model_limited_key(one_gateway):
    limited = one_gateway.openai(one_gateway.create_key(tenant="limited", models=[MODEL_A])["key"])
    assert chat(limited, MODEL_A).choices[0].message.content == "ok"

    with pytest.raises(openai.NotFoundError) as forbidden:
        chat(limited, MODEL_B)
    with pytest.raises(openai.NotFoundError) as unknown:
        chat(limited, "gamma")
    # A model the key may not use looks exactly like one that does not exist.
    assert forbidden.value.status_code == unknown.value.status_code == 404
    assert forbidden.value.code == "model_not_found"
    assert forbidden.value.body == json.loads(
        json.dumps(unknown.value.body).replace("gamma", MODEL_B)
    )

    with pytest.raises(openai.NotFoundError):
        limited.embeddings.create(model=MODEL_B, input="x")
    with pytest.raises(openai.NotFoundError):
        limited.completions.create(model=MODEL_B, prompt="x")


def test_model_limited_key_ollama_front(one_gateway):
    client = one_gateway.ollama(one_gateway.create_key(tenant="limited", models=[MODEL_A])["key"])
    assert client.generate(model=MODEL_A, prompt="echo:ok").response == "ok"
    with pytest.raises(ollama.ResponseError) as forbidden:
        client.generate(model=MODEL_B, prompt="echo:ok")
    with pytest.raises(ollama.ResponseError) as unknown:
        client.generate(model="gamma", prompt="echo:ok")
    assert forbidden.value.status_code == unknown.value.status_code == 404
    assert forbidden.value.error == unknown.value.error.replace("gamma", MODEL_B)


def test_model_limited_key_sees_only_its_models(one_gateway):
    key = one_gateway.create_key(tenant="limited", models=[MODEL_A])["key"]
    assert [m.id for m in one_gateway.openai(key).models.list()] == [MODEL_A]
    assert [m.model.removesuffix(":latest") for m in one_gateway.ollama(key).list().models] == [
        MODEL_A
    ]
    with pytest.raises(openai.NotFoundError):
        one_gateway.openai(key).models.retrieve(MODEL_B)
    with pytest.raises(ollama.ResponseError) as err:
        one_gateway.ollama(key).show(MODEL_B)
    assert err.value.status_code == 404


def test_admin_api_and_auditor_with_keys_made_by_the_cli(one_gateway):
    """An operator bootstraps an admin and an auditor with the CLI; the admin makes and revokes
    a key over HTTP; the auditor finds both changes in the audit log over HTTP."""
    import httpx

    admin = json.loads(
        one_gateway.cli(
            "keys", "create", "--tenant", "operator", "--roles", "admin", "--json"
        ).stdout
    )
    assert admin["roles"] == ["admin"]
    auditor = json.loads(
        one_gateway.cli(
            "keys", "create", "--tenant", "operator", "--roles", "auditor", "--json"
        ).stdout
    )
    http = httpx.Client(base_url=one_gateway.url, timeout=10)
    as_admin = {"Authorization": f"Bearer {admin['key']}"}
    as_auditor = {"Authorization": f"Bearer {auditor['key']}"}

    # Keys are minted only for tenants that exist: the operator creates the tenant first.
    tenant = http.post("/admin/tenants", headers=as_admin, json={"name": "clinic-a"})
    assert tenant.status_code == 201, tenant.text
    created = http.post(
        "/admin/keys",
        headers=as_admin,
        json={"tenant": "clinic-a", "models": [MODEL_A], "expires_in": "1h"},
    )
    assert created.status_code == 201, created.text
    new = created.json()
    assert new["tenant"] == "clinic-a" and new["roles"] == ["user"]
    assert chat(one_gateway.openai(new["key"])).choices[0].message.content == "ok"
    # The CLI sees the key the API made, with its roles.
    listed = json.loads(one_gateway.cli("keys", "list", "--tenant", "clinic-a", "--json").stdout)
    assert [k["id"] for k in listed] == [new["id"]]
    assert listed[0]["roles"] == ["user"]

    # The admin cannot read the audit log; the auditor cannot make keys.
    assert http.get("/admin/audit", headers=as_admin).status_code == 403
    assert http.post("/admin/keys", headers=as_auditor, json={}).status_code == 403

    assert http.delete(f"/admin/keys/{new['id']}", headers=as_admin).status_code == 204
    with pytest.raises(openai.AuthenticationError):
        chat(one_gateway.openai(new["key"]))

    found = {}
    for event_type in ("key_created", "key_revoked"):
        page = http.get(
            "/admin/audit",
            headers=as_auditor,
            params={"event_type": event_type, "actor": admin["id"]},
        )
        assert page.status_code == 200, page.text
        entries = page.json()["data"]
        assert len(entries) == 1, entries
        found[event_type] = entries[0]["event"]
    assert new["id"] in found["key_created"]["detail"]
    assert new["id"] in found["key_revoked"]["detail"]
    assert new["key"] not in json.dumps(found)
