#!/usr/bin/env bash
# Smoke test of the compose setup: builds the images, starts the store and the three nodes
# of the cluster, waits for /readyz on each, checks GET /cluster/partitions shows every
# partition owned and spread over the three nodes, runs the HelloSequence orchestration
# started through node-1 and reads its status through node-2 and node-3, restarts node-2
# (stop: SIGTERM, node-1 and node-3 then own every partition; start: it joins again) and
# checks every partition is owned again by the three nodes and the instance is still there,
# then removes everything
# (`docker-compose down -v`). Exits non-zero on any failure.
#
# Usage: tests/docker/compose-smoke.sh
# Environment: SKIP_BUILD=1 (use the existing images), PERDURE_NODE1_PORT,
# PERDURE_NODE2_PORT, PERDURE_NODE3_PORT (host ports, default: free ones), SMOKE_PROJECT
# (compose project name, default perdure-smoke), SMOKE_TIMEOUT (seconds per wait, default
# 120), KEEP=1 (leave the containers up). PERDURE_NODE_BIN is passed to
# docker/build-images.sh (e.g. a debug build, to skip the release build).
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

# free_port: a free port on 127.0.0.1 (the kernel picks one; it is closed before compose
# binds it).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PERDURE_NODE1_PORT="${PERDURE_NODE1_PORT:-$(free_port)}"
PERDURE_NODE2_PORT="${PERDURE_NODE2_PORT:-$(free_port)}"
PERDURE_NODE3_PORT="${PERDURE_NODE3_PORT:-$(free_port)}"
export PERDURE_NODE1_PORT PERDURE_NODE2_PORT PERDURE_NODE3_PORT
NODE1="http://127.0.0.1:${PERDURE_NODE1_PORT}"
NODE2="http://127.0.0.1:${PERDURE_NODE2_PORT}"
NODE3="http://127.0.0.1:${PERDURE_NODE3_PORT}"
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

# wait_ready URL: polls GET URL/readyz until 200, at most $TIMEOUT seconds.
wait_ready() {
  local deadline=$((SECONDS + TIMEOUT))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1/readyz" || true)" = 200 ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$1/readyz not 200 after ${TIMEOUT}s"
    sleep 1
  done
}

# owners URL: prints "<partitions> <unowned> <not yet at the desired owner> <owner>=<count>..."
# from GET URL/cluster/partitions.
owners() {
  curl -s --max-time 5 "$1/cluster/partitions" | jq -r '
    .partitions as $p
    | [($p | length), ([$p[] | select(.owner == null)] | length),
       ([$p[] | select(.owner != .desired)] | length)]
      + ([$p[] | select(.owner != null) | .owner] | group_by(.) | map("\(.[0])=\(length)"))
    | join(" ")' 2>/dev/null || true
}

# wait_owners URL NODE...: waits until, as URL sees the table, every partition has an owner,
# every owner is the partition's desired owner, and the owners are exactly NODE... (each
# owning some), at most $TIMEOUT seconds; prints the last view.
wait_owners() {
  local url="$1" deadline=$((SECONDS + TIMEOUT)) view want got
  shift
  want="$(printf '%s\n' "$@" | sort | tr '\n' ' ')"
  while :; do
    view="$(owners "$url")"
    got="$(tr ' ' '\n' <<<"$view" | sed -n 's/=.*//p' | sort | tr '\n' ' ')"
    if [ -n "$view" ] && [ "$(cut -d' ' -f2,3 <<<"$view")" = "0 0" ] && [ "$got" = "$want" ]; then
      echo "$view"
      return 0
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail "partitions not placed on exactly $want after ${TIMEOUT}s: ${view:-no answer from $url/cluster/partitions}"
    sleep 1
  done
}

# check_completed URI: the status at URI is HelloSequence's instance, Completed, with the
# expected output.
check_completed() {
  local code body
  read -r code body <<<"$(get_status "$1")"
  [ "$code" = 200 ] || fail "status query $1 answered $code: $body"
  [ "$(jq -r '.instanceId' <<<"$body")" = "$instance" ] || fail "$1: wrong instance: $body"
  [ "$(jq -r '.runtimeStatus' <<<"$body")" = Completed ] || fail "$1: not Completed: $body"
  [ "$(jq -c '.output' <<<"$body")" = "$EXPECTED" ] || fail "$1: output $(jq -c '.output' <<<"$body"), expected $EXPECTED"
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

step "docker-compose up -d (project $PROJECT, nodes on $NODE1 $NODE2 $NODE3)"
compose down -v --remove-orphans >/dev/null 2>&1 || true
compose up -d
running="$(compose ps --services --filter status=running | sort | tr '\n' ' ')"
step "running services: $running"
[ "$running" = "node-1 node-2 node-3 store " ] || fail "expected node-1 node-2 node-3 store running, got: $running"

for node in "$NODE1" "$NODE2" "$NODE3"; do
  step "waiting for $node/readyz"
  wait_ready "$node"
done

step "waiting for the partitions to spread over the 3 nodes"
for node in "$NODE1" "$NODE2" "$NODE3"; do
  view="$(wait_owners "$node" node-1 node-2 node-3)" # an assignment: a failed wait stops the script
  step "  $node/cluster/partitions: $view (partitions, unowned, not at desired, owner=count)"
done

step "starting HelloSequence through node-1"
start_body="$(mktemp)"
code="$(curl -s -o "$start_body" -w '%{http_code}' --max-time 10 -X POST \
  "$NODE1$BASE_PATH/orchestrators/HelloSequence")"
start="$(cat "$start_body")"; rm -f "$start_body"
[ "$code" = 202 ] || fail "start answered $code: $start"
instance="$(jq -er '.id' <<<"$start")" || fail "no id in $start"
status_uri="$(jq -er '.statusQueryGetUri' <<<"$start")" || fail "no statusQueryGetUri in $start"
case "$status_uri" in "$NODE1"/*) ;; *) fail "statusQueryGetUri $status_uri is not on $NODE1" ;; esac
status_path="${status_uri#"$NODE1"}"
step "instance $instance"

deadline=$((SECONDS + TIMEOUT))
while :; do
  read -r code body <<<"$(get_status "$NODE2$status_path")"
  [ "$code" = 200 ] && break
  [ "$code" = 202 ] || fail "status query through node-2 answered $code: $body"
  [ "$SECONDS" -lt "$deadline" ] || fail "instance $instance not completed after ${TIMEOUT}s: $body"
  sleep 0.5
done
check_completed "$NODE2$status_path"
step "completed with $EXPECTED (read through node-2)"
check_completed "$NODE3$status_path"
step "same status through node-3"
check_completed "$status_uri"
step "same status through node-1"

rows="$(compose exec -T store psql -U perdure -d perdure -Atc 'SELECT count(*) FROM kv' | tr -d '\r')" \
  || fail "cannot count the rows of table kv in PostgreSQL"
[ "${rows:-0}" -gt 0 ] || fail "table kv in PostgreSQL is empty: the nodes did not use the store"
step "PostgreSQL table kv holds $rows rows"

step "stopping node-2 (SIGTERM: it hands its partitions off)"
compose stop node-2
for node in "$NODE1" "$NODE3"; do
  view="$(wait_owners "$node" node-1 node-3)"
  step "  $node/cluster/partitions: $view"
done
check_completed "$NODE3$status_path"
step "starting node-2 again"
compose start node-2
wait_ready "$NODE2"
for node in "$NODE1" "$NODE2" "$NODE3"; do
  view="$(wait_owners "$node" node-1 node-2 node-3)"
  step "  $node/cluster/partitions: $view"
done
for node in "$NODE1" "$NODE2" "$NODE3"; do
  check_completed "$node$status_path"
done
step "instance $instance survived the restart (read through the 3 nodes)"

step "PASS"
