"""Two `wardgate serve` processes sharing this machine's Redis enforce one tenant limit
between them (issue 5: "two gateway instances sharing one Redis enforce one global limit")."""

from __future__ import annotations

import os
import time
import uuid

import openai
import pytest

from conftest import MODEL_A, refused_for_tokens_per_day


def test_two_processes_sharing_redis_enforce_one_global_limit(mock, start_gateway):
    redis_url = os.environ.get("WARDGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    env = dict(
        WARDGATE_RATE_LIMIT_BACKEND="redis",
        WARDGATE_REDIS_URL=redis_url,
        # A fresh namespace: nothing left from an earlier run counts.
        WARDGATE_REDIS_NAMESPACE=f"wardgate-e2e:{uuid.uuid4().hex}",
        WARDGATE_RATE_LIMIT_RPM="1000",
        WARDGATE_RATE_LIMIT_TENANT_RPM="4",
    )
    # Each has its own database and key, both of tenant `e2e`: the shared bucket is the tenant.
    first = start_gateway(mock, "ollama", **env)
    second = start_gateway(mock, "ollama", **env)
    clients = [first.openai(first.key), second.openai(second.key)]
    outcomes = []
    for i in range(10):
        try:
            clients[i % 2].chat.completions.create(
                model=MODEL_A, messages=[{"role": "user", "content": "echo:ok"}]
            )
            outcomes.append("ok")
        except openai.RateLimitError as e:
            assert e.code == "rate_limit_exceeded"
            assert int(e.response.headers["retry-after"]) >= 1
            outcomes.append("429")
    # The burst of 4, shared: two through each process, then both refuse.
    assert outcomes == ["ok"] * 4 + ["429"] * 6, outcomes


def test_two_processes_sharing_redis_share_one_tenant_token_budget(mock, start_gateway):
    redis_url = os.environ.get("WARDGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    env = dict(
        WARDGATE_RATE_LIMIT_BACKEND="redis",
        WARDGATE_REDIS_URL=redis_url,
        WARDGATE_REDIS_NAMESPACE=f"wardgate-e2e:{uuid.uuid4().hex}",
        # Less than one answer's tokens: the first answer spends the tenant's day.
        WARDGATE_RATE_LIMIT_TENANT_TOKENS_PER_DAY="3",
    )
    first = start_gateway(mock, "ollama", **env)
    second = start_gateway(mock, "ollama", **env)
    answer = first.openai(first.key).chat.completions.create(
        model=MODEL_A, messages=[{"role": "user", "content": "hello there"}]
    )
    assert answer.usage.total_tokens > 3

    # The first answer's tokens are charged as its response ends: once the first process
    # refuses, the charge is in Redis. The second has spent nothing itself, so its very first
    # request must be refused (one counting alone would answer it, and only refuse the next).
    deadline = time.monotonic() + 5
    while not refused_for_tokens_per_day(first):
        assert time.monotonic() < deadline, "the first process never refused"
        time.sleep(0.05)
    spent = refused_for_tokens_per_day(second)
    assert spent, "the second process answered with the tenant's day spent"
