"""Load test of wardgate's OpenAI-compatible chat route at the seed's profile.

100 users making 100 requests a minute in all (one a minute each, at random offsets), chat
requests with a few hundred to a couple of thousand characters of synthetic clinical-style text
(no real PHI: invented findings, no names, dates or identifiers), 30% of them streamed. At the
end the run passes or fails against the seed's service levels: p50 < 1 s, p95 < 3 s,
p99 < 5 s, errors < 1%; Locust then exits 1 on a failure. See README.md beside this file.

Environment:
  LOADTEST_API_KEY            a key made by `wardgate keys create` (required)
  LOADTEST_MODEL              the model to ask (default smollm2:135m)
  LOADTEST_RPM_PER_USER       requests a minute per user (default 1: 100 users, 100 a minute)
  LOADTEST_STREAM_SHARE       share of streamed requests (default 0.3)
  LOADTEST_MAX_TOKENS         max_tokens of each request (default 128)
"""

import json
import os
import random
import time

from locust import HttpUser, constant_throughput, events, task

API_KEY = os.environ.get("LOADTEST_API_KEY", "")
MODEL = os.environ.get("LOADTEST_MODEL", "smollm2:135m")
RPM_PER_USER = float(os.environ.get("LOADTEST_RPM_PER_USER", "1"))
STREAM_SHARE = float(os.environ.get("LOADTEST_STREAM_SHARE", "0.3"))
MAX_TOKENS = int(os.environ.get("LOADTEST_MAX_TOKENS", "128"))

# The seed's service levels: seconds per percentile, and the largest error ratio.
LEVELS = {0.50: 1.0, 0.95: 3.0, 0.99: 5.0}
MAX_ERROR_RATIO = 0.01

# Sentences of invented clinical-style text. Nothing here names a person, a date, a place or a
# number that identifies anyone, so the gateway's PHI rules (`block`) do not refuse them.
FINDINGS = [
    "The patient reports intermittent chest tightness on exertion, relieved by rest.",
    "Blood pressure is 142 over 88 and the heart rate is 84 and regular.",
    "There is mild pitting oedema of both ankles and no calf tenderness.",
    "Lungs are clear on auscultation with no wheeze or crackles.",
    "The patient has type 2 diabetes managed with metformin and diet.",
    "The most recent HbA1c was reported as moderately above target.",
    "Sleep is disturbed by nocturia two to three times a night.",
    "There is no history of smoking and alcohol intake is within guidelines.",
    "The abdomen is soft and non-tender with normal bowel sounds.",
    "The patient describes low mood and reduced interest over several weeks.",
    "Current medications include an ACE inhibitor and a statin.",
    "A productive cough with green sputum started five days ago.",
    "Temperature is 38.1 degrees Celsius and oxygen saturation is 95 percent on room air.",
    "The rash is erythematous, blanching and confined to the lower legs.",
    "Knee pain worsens on stairs and there is crepitus on flexion.",
    "There is no focal neurological deficit and reflexes are symmetrical.",
]
QUESTIONS = [
    "Summarise the key findings in three bullet points.",
    "List the differential diagnoses to consider, most likely first.",
    "Draft a short referral letter to a specialist based on these notes.",
    "What follow-up investigations would be reasonable?",
    "Rewrite these notes in plain language for the patient.",
]


def clinical_prompt() -> str:
    """A note of 300 to 2,000 characters followed by a question."""
    target = random.randint(300, 2000)
    parts = []
    while sum(len(p) + 1 for p in parts) < target:
        parts.append(random.choice(FINDINGS))
    return " ".join(parts)[:target] + "\n\n" + random.choice(QUESTIONS)


class ChatUser(HttpUser):
    # Each user sends at most RPM_PER_USER requests a minute; the first waits a random part
    # of a minute so the users do not arrive in step.
    wait_time = constant_throughput(RPM_PER_USER / 60.0)

    def on_start(self):
        if not API_KEY:
            raise RuntimeError("set LOADTEST_API_KEY to a key from `wardgate keys create`")
        self.client.headers["Authorization"] = f"Bearer {API_KEY}"
        time.sleep(random.uniform(0, 60.0 / RPM_PER_USER))

    @task
    def chat(self):
        body = {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are a concise clinical documentation assistant."},
                {"role": "user", "content": clinical_prompt()},
            ],
            "max_tokens": MAX_TOKENS,
            "temperature": 0.2,
        }
        if random.random() < STREAM_SHARE:
            self.stream(body)
        else:
            with self.client.post(
                "/v1/chat/completions", json=body, name="chat", catch_response=True
            ) as r:
                if r.status_code != 200:
                    r.failure(f"HTTP {r.status_code}")
                elif not r.json().get("choices"):
                    r.failure("no choices in the answer")

    def stream(self, body):
        """A streamed chat, timed to its last event (`data: [DONE]`), not to its headers."""
        body = dict(body, stream=True)
        start = time.perf_counter()
        error, length, done = None, 0, False
        try:
            with self.client.post(
                "/v1/chat/completions", json=body, stream=True, catch_response=True,
                name="chat (stream)",
            ) as r:
                if r.status_code != 200:
                    error = RuntimeError(f"HTTP {r.status_code}")
                else:
                    for line in r.iter_lines():
                        length += len(line)
                        if line == b"data: [DONE]":
                            done = True
                        elif line.startswith(b"data: "):
                            json.loads(line[6:])  # every event is JSON
                    if not done:
                        error = RuntimeError("the stream ended without [DONE]")
                # The request is recorded below with the whole stream's time, not here.
                r.success()
        except Exception as e:  # a broken connection or a bad event is a failed request
            error = e
        self.environment.events.request.fire(
            request_type="POST",
            name="chat (stream, whole)",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            exception=error,
            context={},
        )


def verdict(stats):
    """The seed's service levels against the whole run: a list of failures (empty: pass)."""
    total = stats.total
    problems = []
    if total.num_requests == 0:
        return ["no request was made"]
    # The total counts a stream twice (its headers and its whole); the levels are judged on
    # complete answers: the non-streamed requests and the whole streams.
    complete = [e for e in stats.entries.values() if e.name != "chat (stream)"]
    merged = None
    for e in complete:
        if merged is None:
            from locust.stats import StatsEntry

            merged = StatsEntry(stats, "complete answers", "")
        merged.extend(e)
    if merged is None or merged.num_requests == 0:
        return ["no complete answer was recorded"]
    for q, limit in LEVELS.items():
        got = merged.get_response_time_percentile(q) / 1000
        mark = "ok  " if got < limit else "FAIL"
        print(f"{mark} p{int(q * 100)} {got:.3f} s (level: under {limit:g} s)")
        if got >= limit:
            problems.append(f"p{int(q * 100)} {got:.3f} s >= {limit:g} s")
    ratio = merged.num_failures / merged.num_requests
    mark = "ok  " if ratio < MAX_ERROR_RATIO else "FAIL"
    print(f"{mark} errors {ratio:.2%} of {merged.num_requests} (level: under {MAX_ERROR_RATIO:.0%})")
    if ratio >= MAX_ERROR_RATIO:
        problems.append(f"error ratio {ratio:.2%} >= {MAX_ERROR_RATIO:.0%}")
    return problems


@events.quitting.add_listener
def judge(environment, **_kwargs):
    problems = verdict(environment.stats)
    if problems:
        print("wardgate load test: FAIL (" + "; ".join(problems) + ")")
        environment.process_exit_code = 1
    else:
        print("wardgate load test: PASS (the seed's service levels hold)")
        environment.process_exit_code = 0
