#!/bin/sh
# The gateway's start command on Render (render.yaml: dockerCommand). Render gives the private
# model service's address as host:port (fromService, property hostport) and the shared signing
# secret under the name `wardgate llm` reads (the env group wardgate-private-hop);
# `wardgate serve` reads them as WARDGATE_BACKEND and WARDGATE_BACKEND_SECRET.
set -eu

fail() {
    echo "wardgate-render-serve: $*" >&2
    exit 64
}

[ -n "${LLM_HOSTPORT:-}" ] ||
    fail "LLM_HOSTPORT is not set: give it the model service's address (render.yaml: fromService, type pserv, property hostport)"
[ -n "${WARDGATE_LLM_SECRET:-}" ] ||
    fail "WARDGATE_LLM_SECRET is not set: link the env group wardgate-private-hop (render.yaml: fromGroup)"

WARDGATE_BACKEND="ollama:http://${LLM_HOSTPORT}"
WARDGATE_BACKEND_SECRET="${WARDGATE_LLM_SECRET}"
export WARDGATE_BACKEND WARDGATE_BACKEND_SECRET
unset WARDGATE_LLM_SECRET LLM_HOSTPORT
exec wardgate serve "$@"
