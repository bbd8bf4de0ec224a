#!/usr/bin/env bash
# Start or stop a private, throwaway redis-server on 127.0.0.1 (tests and CI).
#
#   scripts/redis-server.sh start <port> <dir> [--appendonly] [extra redis-server args...]
#   scripts/redis-server.sh stop  <port> <dir>
#
# <dir> holds the pid file, the log and (with --appendonly) the AOF files, so a server
# started again with the same <dir> and --appendonly recovers its data. Nothing is ever
# saved otherwise (--save ''), and no system service is involved.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop <port> <dir> [--appendonly] [redis-server args...]" >&2
    exit 2
}

[[ $# -ge 3 ]] || usage
action=$1 port=$2 dir=$3
shift 3
[[ $port =~ ^[0-9]+$ ]] || usage
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pidfile="$dir/redis-$port.pid"

wait_until() { # <seconds> <command...>: poll until the command succeeds
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

alive() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
dead() { ! alive; }

case $action in
start)
    appendonly=no
    if [[ ${1:-} == --appendonly ]]; then
        appendonly=yes
        shift
    fi
    if alive; then
        echo "redis-server already running on port $port (pid $(cat "$pidfile"))" >&2
        exit 1
    fi
    command -v redis-server >/dev/null || {
        echo "redis-server is not installed (apt-get install -y redis-server)" >&2
        exit 1
    }
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly "$appendonly" \
        --daemonize yes --pidfile "$pidfile" --dir "$dir" \
        --logfile "$dir/redis-$port.log" "$@"
    # Ready means answering, not merely forked: a PING without the password still gets
    # a reply (NOAUTH) from a server started with --requirepass.
    if ! wait_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf 'PING\r\n' >&3 && read -r -t 1 reply <&3 && [[ -n \$reply ]]"; then
        echo "redis-server on port $port did not come up; its log:" >&2
        tail -n 20 "$dir/redis-$port.log" >&2 || true
        exit 1
    fi
    echo "redis-server listening on 127.0.0.1:$port (pid $(cat "$pidfile"))"
    ;;
stop)
    if ! alive; then
        rm -f "$pidfile"
        exit 0
    fi
    pid=$(cat "$pidfile")
    kill "$pid"
    # SIGTERM makes redis write its AOF and exit; do not leave a zombie port behind.
    wait_until 10 dead || kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    ;;
*)
    usage
    ;;
esac
