#!/usr/bin/env bash
# Start or stop a private, throwaway PostgreSQL cluster on 127.0.0.1 (tests, CI, benchmarks).
#
#   scripts/postgres-server.sh start <port> <dir> [--durable]
#   scripts/postgres-server.sh create-db <port> <dir> <user> <password> <database>
#   scripts/postgres-server.sh stop <port> <dir>
#
# <dir> holds the cluster (<dir>/data), its unix socket and its log; a cluster started
# again with the same <dir> keeps its data. Debian's `postgresql` package provides the
# binaries (/usr/lib/postgresql/<version>/bin). initdb and the server refuse to run as
# root, so as root they run as the `postgres` user, and <dir> is handed to that user.
# Without --durable the server does not fsync (a test cluster loses nothing it needs).
set -euo pipefail

usage() {
    echo "usage: $0 start|stop <port> <dir> [--durable] | create-db <port> <dir> <user> <password> <database>" >&2
    exit 2
}

[[ $# -ge 3 ]] || usage
action=$1 port=$2 dir=$3
shift 3
[[ $port =~ ^[0-9]+$ ]] || usage

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z $bindir || ! -x $bindir/initdb ]]; then
    echo "PostgreSQL is not installed (apt-get install -y postgresql)" >&2
    exit 1
fi

as_postgres() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

data="$dir/data"
case $action in
start)
    durable=no
    [[ ${1:-} == --durable ]] && durable=yes
    mkdir -p "$dir"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$dir"
    chmod 700 "$dir"
    if [[ ! -f $data/PG_VERSION ]]; then
        as_postgres "$bindir/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$dir/initdb.log" 2>&1 || {
            echo "initdb failed; its log:" >&2
            tail -n 20 "$dir/initdb.log" >&2
            exit 1
        }
    fi
    options="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=100"
    if [[ $durable == no ]]; then
        options="$options -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    if ! as_postgres "$bindir/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 30 \
        -o "$options" start >/dev/null; then
        echo "PostgreSQL on port $port did not start; its log:" >&2
        tail -n 20 "$dir/postgres.log" >&2 || true
        exit 1
    fi
    echo "PostgreSQL listening on 127.0.0.1:$port ($data)"
    ;;
create-db)
    [[ $# -eq 3 ]] || usage
    user=$1 password=$2 database=$3
    [[ $user =~ ^[a-z_][a-z0-9_]*$ && $database =~ ^[a-z_][a-z0-9_]*$ ]] || usage
    [[ $password =~ ^[A-Za-z0-9_-]+$ ]] || usage
    as_postgres "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres \
        -d postgres -c "CREATE ROLE $user LOGIN PASSWORD '$password'" \
        -c "CREATE DATABASE $database OWNER $user" >/dev/null
    ;;
stop)
    if [[ -f $data/postmaster.pid ]]; then
        as_postgres "$bindir/pg_ctl" -D "$data" -w -t 30 -m fast stop >/dev/null ||
            as_postgres "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null || true
    fi
    ;;
*)
    usage
    ;;
esac
