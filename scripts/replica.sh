#!/usr/bin/env bash
# A PostgreSQL streaming replica and a PgBouncer for tests: start | stop | status.
#
#   primary    127.0.0.1:5432  the local cluster (PostgreSQL 15 "main", trust auth, user postgres)
#   replica    127.0.0.1:5433  a hot standby made with pg_basebackup -R, data in $REPLICA_DIR
#   pgbouncer  127.0.0.1:6432  transaction pooling in front of the primary, files in $BOUNCER_DIR
#
# "start" is idempotent: what already runs is checked and left alone, what is missing or
# broken is (re)made. It needs root (it runs the servers as the postgres user) and installs
# the Debian package pgbouncer when it is missing. "status" exits 1 unless both are up.
set -euo pipefail

PRIMARY_PORT=${PRIMARY_PORT:-5432}
REPLICA_PORT=${REPLICA_PORT:-5433}
BOUNCER_PORT=${BOUNCER_PORT:-6432}
HOST=127.0.0.1
SOCKETS=/var/run/postgresql

say() { echo "replica.sh: $*"; }
die() { echo "replica.sh: $*" >&2; exit 1; }
as_postgres() { runuser -u postgres -- "$@"; }
psql_at() {  # psql_at PORT DATABASE SQL: one value, no headers
    psql -X -q -At -h "$HOST" -p "$1" -U postgres -d "$2" -c "$3"
}

primary_version() {
    psql_at "$PRIMARY_PORT" postgres "SHOW server_version_num" | cut -c1-2
}

setup_paths() {
    MAJOR=$(primary_version) || die "the primary on $HOST:$PRIMARY_PORT is not reachable; start it first"
    BIN=/usr/lib/postgresql/$MAJOR/bin
    [ -x "$BIN/pg_ctl" ] || die "no $BIN/pg_ctl for PostgreSQL $MAJOR"
    REPLICA_DIR=${REPLICA_DIR:-/var/lib/postgresql/$MAJOR/replica}
    BOUNCER_DIR=${BOUNCER_DIR:-/var/lib/postgresql/flask-uow-pgbouncer}
}

# -- the primary -----------------------------------------------------------------------------

prepare_primary() {
    local wal_level senders hba
    wal_level=$(psql_at "$PRIMARY_PORT" postgres "SHOW wal_level")
    senders=$(psql_at "$PRIMARY_PORT" postgres "SHOW max_wal_senders")
    if [ "$wal_level" = minimal ] || [ "$senders" -lt 2 ]; then
        die "the primary has wal_level=$wal_level, max_wal_senders=$senders; streaming needs" \
            "wal_level=replica and max_wal_senders>=2 (ALTER SYSTEM SET ..., then restart it)"
    fi
    # Replication connections match only lines naming the "replication" database.
    local allowed
    allowed=$(psql_at "$PRIMARY_PORT" postgres "SELECT count(*) FROM pg_hba_file_rules
        WHERE 'replication' = ANY(database) AND type = 'host' AND address = '127.0.0.1'
        AND auth_method = 'trust' AND error IS NULL")
    if [ "$allowed" = 0 ]; then
        hba=$(psql_at "$PRIMARY_PORT" postgres "SHOW hba_file")
        say "allowing replication connections from $HOST in $hba"
        printf '\n# Added by flask-uow scripts/replica.sh: the test replica streams from here.\n%s\n' \
            "host replication all 127.0.0.1/32 trust" >>"$hba"
        psql_at "$PRIMARY_PORT" postgres "SELECT pg_reload_conf()" >/dev/null
    fi
}

# -- the replica -----------------------------------------------------------------------------

replica_ready() { "$BIN/pg_isready" -q -h "$HOST" -p "$REPLICA_PORT"; }

replica_streaming() {
    [ "$(psql_at "$REPLICA_PORT" postgres "SELECT pg_is_in_recovery()
        AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')" 2>/dev/null)" = t ]
}

write_replica_config() {
    cat >"$REPLICA_DIR/postgresql.conf" <<EOF
# The flask-uow test replica (written by scripts/replica.sh; rewritten on every start).
listen_addresses = '$HOST'
port = $REPLICA_PORT
unix_socket_directories = '$SOCKETS'
hba_file = '$REPLICA_DIR/pg_hba.conf'
ident_file = '$REPLICA_DIR/pg_ident.conf'
cluster_name = '$MAJOR/replica'
hot_standby = on
hot_standby_feedback = on
max_connections = 100
shared_buffers = 64MB
wal_receiver_status_interval = 1s
fsync = off
logging_collector = off
EOF
    cat >"$REPLICA_DIR/pg_hba.conf" <<EOF
local all all trust
host all all 127.0.0.1/32 trust
EOF
    : >"$REPLICA_DIR/pg_ident.conf"
    chown postgres:postgres "$REPLICA_DIR/postgresql.conf" "$REPLICA_DIR/pg_hba.conf" \
        "$REPLICA_DIR/pg_ident.conf"
}

base_backup() {
    say "pg_basebackup of $HOST:$PRIMARY_PORT into $REPLICA_DIR"
    stop_replica
    rm -rf "$REPLICA_DIR"
    install -d -o postgres -g postgres -m 700 "$REPLICA_DIR"
    as_postgres "$BIN/pg_basebackup" -h "$HOST" -p "$PRIMARY_PORT" -U postgres \
        -D "$REPLICA_DIR" -R -X stream -c fast --no-sync
}

start_replica_server() {
    write_replica_config
    as_postgres "$BIN/pg_ctl" -D "$REPLICA_DIR" -l "$REPLICA_DIR/replica.log" -w -t 30 \
        start >/dev/null
}

wait_until() {  # wait_until SECONDS COMMAND...: poll COMMAND every 0.2 s
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

start_replica() {
    if replica_ready && wait_until 10 replica_streaming; then
        resume_replay
        say "replica already streaming on $HOST:$REPLICA_PORT"
        return
    fi
    if [ ! -f "$REPLICA_DIR/standby.signal" ] || ! start_replica_server \
        || ! wait_until 15 replica_streaming; then
        # Missing, half made, or too far behind to catch up (WAL recycled): make it anew.
        base_backup
        start_replica_server || { tail -20 "$REPLICA_DIR/replica.log" >&2; die "replica failed to start"; }
        wait_until 20 replica_streaming || die "the replica started but does not stream; see $REPLICA_DIR/replica.log"
    fi
    resume_replay
    say "replica streaming on $HOST:$REPLICA_PORT"
}

resume_replay() {
    # A test that paused replay and died must not leave the next run with a frozen replica.
    psql_at "$REPLICA_PORT" postgres "SELECT pg_wal_replay_resume()" >/dev/null
}

stop_replica() {
    if [ -f "$REPLICA_DIR/postmaster.pid" ]; then
        as_postgres "$BIN/pg_ctl" -D "$REPLICA_DIR" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    fi
}

# -- pgbouncer -------------------------------------------------------------------------------

install_pgbouncer() {
    command -v pgbouncer >/dev/null && return
    say "installing the Debian package pgbouncer"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the package's own service from starting on 6432 behind our back.
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1
    fi
    { apt-get install -y -q pgbouncer >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q pgbouncer >/dev/null; }; } \
        || { [ -n "$made_policy" ] && rm -f "$policy"; die "could not install pgbouncer"; }
    [ -n "$made_policy" ] && rm -f "$policy"
    return 0
}

bouncer_ready() {
    psql_at "$BOUNCER_PORT" postgres "SELECT 1" >/dev/null 2>&1
}

bouncer_pid() {
    local pid
    pid=$(cat "$BOUNCER_DIR/pgbouncer.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null && echo "$pid"
}

write_bouncer_config() {
    install -d -o postgres -g postgres -m 700 "$BOUNCER_DIR"
    cat >"$BOUNCER_DIR/pgbouncer.ini" <<EOF
; The flask-uow test PgBouncer (written by scripts/replica.sh; rewritten on every start).
[databases]
; Any database name goes to the primary: tests make scratch databases with unique names.
* = host=$HOST port=$PRIMARY_PORT

[pgbouncer]
listen_addr = $HOST
listen_port = $BOUNCER_PORT
unix_socket_dir = $BOUNCER_DIR
auth_type = trust
auth_file = $BOUNCER_DIR/userlist.txt
admin_users = postgres
stats_users = postgres
pool_mode = transaction
max_client_conn = 400
default_pool_size = 8
server_lifetime = 600
; Test sessions make many short-lived databases: do not keep idle server connections to them.
server_idle_timeout = 10
logfile = $BOUNCER_DIR/pgbouncer.log
pidfile = $BOUNCER_DIR/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
EOF
    printf '"postgres" ""\n' >"$BOUNCER_DIR/userlist.txt"
    chown postgres:postgres "$BOUNCER_DIR/pgbouncer.ini" "$BOUNCER_DIR/userlist.txt"
}

start_bouncer() {
    install_pgbouncer
    write_bouncer_config
    local pid
    if pid=$(bouncer_pid); then
        kill -HUP "$pid"  # re-read the ini
    else
        if bouncer_ready; then
            die "something else answers on $HOST:$BOUNCER_PORT (not our pgbouncer); stop it first"
        fi
        as_postgres pgbouncer -q -d "$BOUNCER_DIR/pgbouncer.ini"
    fi
    wait_until 10 bouncer_ready || { tail -20 "$BOUNCER_DIR/pgbouncer.log" >&2; die "pgbouncer does not answer"; }
    say "pgbouncer $(pgbouncer --version | head -1 | awk '{print $2}') (transaction pooling) on $HOST:$BOUNCER_PORT"
}

stop_bouncer() {
    local pid
    if pid=$(bouncer_pid); then
        kill -INT "$pid"
        wait_until 10 bash -c "! kill -0 $pid 2>/dev/null" || kill -9 "$pid"
    fi
}

# -- commands --------------------------------------------------------------------------------

status() {
    local ok=0 lag
    if replica_ready && replica_streaming; then
        lag=$(psql_at "$REPLICA_PORT" postgres "SELECT CASE WHEN pg_is_wal_replay_paused()
            THEN 'replay PAUSED' ELSE 'replaying' END || ', ' ||
            pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) || ' bytes to replay'")
        say "replica: streaming on $HOST:$REPLICA_PORT ($lag)"
    else
        say "replica: DOWN on $HOST:$REPLICA_PORT"; ok=1
    fi
    if bouncer_ready; then
        say "pgbouncer: up on $HOST:$BOUNCER_PORT"
    else
        say "pgbouncer: DOWN on $HOST:$BOUNCER_PORT"; ok=1
    fi
    return $ok
}

main() {
    [ "$(id -u)" = 0 ] || die "run as root (it runs the servers as the postgres user)"
    setup_paths
    case "${1:-}" in
    start)
        prepare_primary
        start_replica
        start_bouncer
        ;;
    stop)
        stop_bouncer
        stop_replica
        say "stopped"
        ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
    esac
}

main "$@"
