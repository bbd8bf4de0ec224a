#!/usr/bin/env bash
# Start or stop a private, throwaway SQS endpoint on 127.0.0.1: moto's standalone server
# (PyPI moto[server], a dev dependency), for tests, benchmarks and CI.
#
#   scripts/moto-server.sh start <port> <dir>
#   scripts/moto-server.sh stop  <port> <dir>
#
# <dir> holds the pid file and the log. Its state lives in memory only: a restarted server
# has no queues. Any credentials work against it (e.g. AWS_ACCESS_KEY_ID=testing).
# PYTHON selects the interpreter that has moto (default: the repository's .venv).
set -euo pipefail

usage() {
    echo "usage: $0 start|stop <port> <dir>" >&2
    exit 2
}

[[ $# -eq 3 ]] || usage
action=$1 port=$2 dir=$3
[[ $port =~ ^[0-9]+$ ]] || usage
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pidfile="$dir/moto-$port.pid"
logfile="$dir/moto-$port.log"
python=${PYTHON:-"$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python"}

alive() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

answers() { # an HTTP answer on the port, whatever its status
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    read -r -t 2 reply <&3
    exec 3<&-
    [[ $reply == HTTP/* ]]
}

case $action in
start)
    if alive; then
        echo "moto server already running on port $port (pid $(cat "$pidfile"))" >&2
        exit 1
    fi
    AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing} \
        nohup "$python" -m moto.server -H 127.0.0.1 -p "$port" >"$logfile" 2>&1 </dev/null &
    echo $! >"$pidfile"
    deadline=$((SECONDS + 30))
    until answers 2>/dev/null; do
        if ! alive || ((SECONDS >= deadline)); then
            echo "moto server on port $port did not come up; its log:" >&2
            tail -n 20 "$logfile" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "moto server (SQS endpoint) on http://127.0.0.1:$port (pid $(cat "$pidfile"))"
    ;;
stop)
    if alive; then
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    ;;
*)
    usage
    ;;
esac
