#!/usr/bin/env bash
# Smoke test of the compose setup: builds the images, starts the store and one node, runs the
# HelloSequence orchestration through the HTTP API, restarts the node container and checks
# the instance is still there (its state lives in PostgreSQL), then removes everything
# (`docker-compose down -v`). Exits non-zero on any failure.
#
# Usage: tests/docker/compose-smoke.sh
# Environment: SKIP_BUILD=1 (use the existing images), PERDURE_NODE1_PORT (host port,
# default: a free one), SMOKE_PROJECT (compose project name, default perdure-smoke),
# SMOKE_TIMEOUT (seconds per wait, default 120), KEEP=1 (leave the containers up).
# Talks only to 127.0.0.1 and the compose network.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROJECT="${SMOKE_PROJECT:-perdure-smoke}"
TIMEOUT="${SMOKE_TIMEOUT:-120}"
BASE_PATH=/runtime/webhooks/durabletask
EXPECTED='["Hello Tokyo!","Hello Seattle!","Hello London!"]'

fail() { echo "compose-smoke: FAIL: $*" >&2; exit 1; }
step() { echo "compose-smoke: $*" >&2; }

for tool in docker docker-compose curl jq; do
  command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is not installed"
done

if [ -z "${PERDURE_NODE1_PORT:-}" ]; then
  # A free port on 127.0.0.1 (the kernel picks one; it is closed before compose binds it).
  PERDURE_NODE1_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18080)"
fi
export PERDURE_NODE1_PORT
NODE="http://127.0.0.1:${PERDURE_NODE1_PORT}"
compose() { docker-compose -f "$ROOT/docker-compose.yml" -p "$PROJECT" "$@"; }

cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    step "logs of the failed run:"
    compose logs --no-color --tail=60 >&2 || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then
    step "KEEP=1: leaving project $PROJECT up (docker-compose -p $PROJECT down -v)"
  else
    compose down -v --remove-orphans >/dev/null 2>&1 || step "warning: docker-compose down -v failed"
  fi
  exit "$rc"
}
trap cleanup EXIT

# wait_ready: polls GET /readyz until 200, at most $TIMEOUT seconds.
wait_ready() {
  local deadline=$((SECONDS + TIMEOUT))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$NODE/readyz" || true)" = 200 ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$NODE/readyz not 200 after ${TIMEOUT}s"
    sleep 1
  done
}

# get_status URI: prints "HTTP_CODE BODY" of a status query.
get_status() {
  local body code
  body="$(mktemp)"
  code="$(curl -s -o "$body" -w '%{http_code}' --max-time 10 "$1" || echo 000)"
  printf '%s %s' "$code" "$(cat "$body")"
  rm -f "$body"
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step "building the images"
  "$ROOT/docker/build-images.sh"
fi

step "docker-compose up -d (project $PROJECT, node on $NODE)"
compose down -v --remove-orphans >/dev/null 2>&1 || true
compose up -d
running="$(compose ps --services --filter status=running | sort | tr '\n' ' ')"
step "running services: $running"
case "$running" in *node-2*|*node-3*) fail "cluster nodes started without --profile cluster: $running" ;; esac

step "waiting for $NODE/readyz"
wait_ready

step "starting HelloSequence"
start_body="$(mktemp)"
code="$(curl -s -o "$start_body" -w '%{http_code}' --max-time 10 -X POST \
  "$NODE$BASE_PATH/orchestrators/HelloSequence")"
start="$(cat "$start_body")"; rm -f "$start_body"
[ "$code" = 202 ] || fail "start answered $code: $start"
instance="$(jq -er '.id' <<<"$start")" || fail "no id in $start"
status_uri="$(jq -er '.statusQueryGetUri' <<<"$start")" || fail "no statusQueryGetUri in $start"
case "$status_uri" in "$NODE"/*) ;; *) fail "statusQueryGetUri $status_uri is not on $NODE" ;; esac
step "instance $instance"

deadline=$((SECONDS + TIMEOUT))
while :; do
  read -r code body <<<"$(get_status "$status_uri")"
  [ "$code" = 200 ] && break
  [ "$code" = 202 ] || fail "status query answered $code: $body"
  [ "$SECONDS" -lt "$deadline" ] || fail "instance $instance not completed after ${TIMEOUT}s: $body"
  sleep 0.5
done
output="$(jq -c '.output' <<<"$body")"
[ "$(jq -r '.runtimeStatus' <<<"$body")" = Completed ] || fail "runtimeStatus is not Completed: $body"
[ "$output" = "$EXPECTED" ] || fail "output $output, expected $EXPECTED"
step "completed with $output"

rows="$(compose exec -T store psql -U perdure -d perdure -Atc 'SELECT count(*) FROM kv' | tr -d '\r')" \
  || fail "cannot count the rows of table kv in PostgreSQL"
[ "${rows:-0}" -gt 0 ] || fail "table kv in PostgreSQL is empty: the node did not use the store"
step "PostgreSQL table kv holds $rows rows"

step "restarting the node container"
compose restart node-1
wait_ready
read -r code body <<<"$(get_status "$status_uri")"
[ "$code" = 200 ] || fail "after the restart the status query answered $code: $body"
[ "$(jq -r '.instanceId' <<<"$body")" = "$instance" ] || fail "after the restart: wrong instance: $body"
[ "$(jq -r '.runtimeStatus' <<<"$body")" = Completed ] || fail "after the restart: $body"
[ "$(jq -c '.output' <<<"$body")" = "$EXPECTED" ] || fail "after the restart: output changed: $body"
step "instance $instance survived the restart"

step "PASS"
