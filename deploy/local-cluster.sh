#!/usr/bin/env bash
# Starts (up) or stops (down) a three-node raftkv cluster on loopback.
#
#   deploy/local-cluster.sh up     build if needed, start 3 nodes, wait for a leader
#   deploy/local-cluster.sh down   stop them (SIGTERM, then SIGKILL after 10 s)
#
# Client endpoints 127.0.0.1:7001-7003, peer ports 7101-7103 (node N: BASE+N
# and BASE+100+N, BASE being $RAFTKV_BASE_PORT, 7000 unless set). Data under
# ./data (or $RAFTKV_DATA): DATA/nodeN/ for each node's stores, DATA/nodeN.log
# for its log and DATA/nodeN.pid for its process id.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RAFTKV_BUILD_DIR:-$root/build}
data=${RAFTKV_DATA:-$PWD/data}
raftd=$build/service/raftd
raftctl=$build/service/raftctl
base=${RAFTKV_BASE_PORT:-7000}
if ! [[ $base =~ ^[1-9][0-9]*$ ]] || ((base + 103 > 65535)); then
  echo "RAFTKV_BASE_PORT must be a number from 1 to 65432, not '$base'" >&2
  exit 2
fi
client_port() { echo $((base + $1)); }
peer_port() { echo $((base + 100 + $1)); }
cluster="1=127.0.0.1:$(peer_port 1)/127.0.0.1:$(client_port 1)"
cluster+=",2=127.0.0.1:$(peer_port 2)/127.0.0.1:$(client_port 2)"
cluster+=",3=127.0.0.1:$(peer_port 3)/127.0.0.1:$(client_port 3)"
endpoints=127.0.0.1:$(client_port 1),127.0.0.1:$(client_port 2),127.0.0.1:$(client_port 3)

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# True when something accepts connections on 127.0.0.1:$1.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

up() {
  if [[ ! -x $raftd || ! -x $raftctl ]]; then
    echo "building raftkv (first run only)..."
    "$root/scripts/build.sh"
  fi
  mkdir -p "$data"
  # A port held by another process (another cluster, say) would make that
  # node exit, while the status check below could reach the other process
  # and report this cluster up: refuse before starting anything.
  local taken=()
  for id in 1 2 3; do
    running "$data/node$id.pid" && continue
    for port in $(client_port $id) $(peer_port $id); do
      if port_taken "$port"; then taken+=("$port"); fi
    done
  done
  if ((${#taken[@]})); then
    echo "port(s) ${taken[*]} on 127.0.0.1 are in use by another process; stop it, or" \
      "choose other ports with RAFTKV_BASE_PORT (node N uses BASE+N and BASE+100+N)" >&2
    exit 1
  fi
  for id in 1 2 3; do
    pidfile=$data/node$id.pid
    if running "$pidfile"; then
      echo "node $id already running (pid $(cat "$pidfile"))"
      continue
    fi
    "$raftd" --id=$id --cluster_id=1 --initial_cluster="$cluster" \
      --data_dir="$data/node$id" >>"$data/node$id.log" 2>&1 &
    echo $! >"$pidfile"
  done
  # Wait (at most 20 s) until some node reports a leader.
  for _ in $(seq 1 100); do
    for id in 1 2 3; do
      if ! running "$data/node$id.pid"; then
        echo "node $id exited; its log ($data/node$id.log) ends with:" >&2
        tail -n 5 "$data/node$id.log" >&2
        down
        exit 1
      fi
    done
    if "$raftctl" --endpoints=$endpoints --timeout_ms=500 -w json status 2>/dev/null |
        grep -q '"role":"leader"'; then
      "$raftctl" --endpoints=$endpoints status || true
      cat <<MSG

raftkv is up. Client endpoints: $endpoints
Data and logs: $data
Try:
  $raftctl --endpoints=$endpoints put hello world
  $raftctl --endpoints=$endpoints get hello
Stop with: ${RAFTKV_DATA:+RAFTKV_DATA=$data }$0 down
MSG
      return 0
    fi
    sleep 0.2
  done
  echo "no leader was elected within 20 s; see $data/node*.log" >&2
  exit 1
}

down() {
  for id in 1 2 3; do
    pidfile=$data/node$id.pid
    if running "$pidfile"; then
      pid=$(cat "$pidfile")
      kill -TERM "$pid"
      for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$pid" 2>/dev/null; then
        echo "node $id (pid $pid) did not stop in 10 s; killing it" >&2
        kill -KILL "$pid" || true
      fi
      echo "stopped node $id (pid $pid)"
    fi
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
