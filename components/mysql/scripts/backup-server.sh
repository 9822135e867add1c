#!/usr/bin/env bash
# backup-server.sh: sidecar container `backup` (see CONTRACT.md).
#
#   backup-server.sh          replicas: configure replication once from the clone's recorded
#                             position; then serve one backup stream per connection on BACKUP_PORT
#
# Which pods are replicas, and what they replicate from, follows the primary record (lib.sh,
# recorded_authority), not the ordinal: the primary moves. A server that was the first primary
# and was demoted by a switchover (bootstrapped or restored, no clone) had its replication configured
# by the switchover itself, which the server keeps: it is left to the server.
#   backup-server.sh stream   run by the listener for each connection: the backup tool, to stdout
# With mysql.tls (TLS_DIR set) the listener speaks TLS with the pod's certificate (lib.sh,
# transport), so a backup only ever leaves the pod encrypted, to a receiver that verified it.
#
# Replication is configured once per clone, in two steps that each leave a marker in DATA_DIR:
#   1. position + source (idempotent while replication has never run)  -> .replication-configured
#   2. START REPLICA                                                    -> .replication-started
# A container restart finds the markers and does neither again; a crash between a step and its
# marker re-runs only that step, which is safe: step 1 never moves a MariaDB position that
# replication has already advanced (the server may have started the replica by itself after a
# pod restart), and MySQL's auto-positioning cannot be rewound. A pod restart keeps DATA_DIR, so the server itself
# resumes replication from its crash-safe GTID state; nothing is cloned or reconfigured. Nothing
# here ever touches the primary.
#
# Credentials: replication is configured as root@localhost through the server's unix socket
# (server_socket in lib.sh; the socket directory is shared by the mysql and backup containers).
# Root is needed: MariaDB refuses SET GLOBAL gtid_slave_pos on a read_only server to every
# account without READ ONLY ADMIN (ERROR 1290, seen in tests), and MySQL requires
# SYSTEM_VARIABLES_ADMIN for gtid_purged; the admin account must hold neither, or it could write
# on replicas. The socket keeps root reachable only inside the pod. The backup account runs the
# backup tool. Passwords are read from the credentials volume (read_secret: root, replication
# and backup are the only keys this container mounts), reach the tools through 0600 option
# files in RUN_DIR, never argv or the environment, and the replication password reaches the
# server only as SQL on stdin.
#
# Liveness: just before the listener starts, its PID goes to backup_listener_pid_file, for
# `probe.sh backup`, which checks that this PID holds the listening socket without ever
# connecting (a connection starts a backup). The file is removed first thing at every start:
# RUN_DIR outlives a container restart, and a stale PID must not vouch for a new container that
# is still configuring replication.
#
# Certificate rotation (mysql.tls): ncat and socat read tls.crt/tls.key once, when they start,
# so a listener exec'd for the container's life would serve a rotated-away certificate until
# the pod restarts, and once it expired or the CA rotated no new replica could clone from here.
# Under TLS this shell therefore stays, as the container's main process, and supervises the
# listener (serve_following_rotation): it starts it in the background and starts it again on
# the new files when their digest changes and they pass the checks readiness runs, never in
# the middle of a stream. Without TLS there is nothing to rotate and the listener is exec'd.
set -euo pipefail
SCRIPT_NAME="backup-server"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

local_mysql_port() {
    peer_port "$MYSQL_PORT" "$(pod_ordinal)"
}

backup_options_file() {
    printf '%s\n' "$RUN_DIR/backup-client.cnf"
}

root_options_file() {
    printf '%s\n' "$RUN_DIR/root-client.cnf"
}

# Held by every stream from its start to its end, and by the supervisor while it replaces the
# listener (flock: the kernel drops a holder's lock when it dies, even by SIGKILL).
stream_lock_file() {
    printf '%s\n' "$RUN_DIR/backup-stream.lock"
}

# One backup, streamed to stdout (the listener connects stdout to the peer).
stream_backup() {
    require_vars POD_NAME DATA_DIR RUN_DIR
    local ordinal target is_replica=no status=0
    if [[ -n "${TLS_DIR:-}" ]]; then
        # The lock's descriptor is inherited by the backup tool, so it is held until the last
        # byte left this process tree. Not waited for: the supervisor holds it only to stop
        # the listener this connection came through, which ends the connection anyway.
        exec 9>>"$(stream_lock_file)"
        flock -n 9 || die "the listener is being restarted on a rotated certificate: refusing" \
            "this stream (the receiver's next attempt gets the new certificate)"
    fi
    ordinal=$(pod_ordinal)
    ((ordinal == $(recorded_authority))) || is_replica=yes
    # Scratch space on the pod's /tmp volume, not RUN_DIR: RUN_DIR is small and in memory.
    target=$(mktemp -d "${TMPDIR:-/tmp}/mysql-cluster-stream.XXXXXX")
    local -a backup
    backup_stream_command backup "$(backup_options_file)" "$target" "$is_replica"
    log "streaming a backup to ${NCAT_REMOTE_ADDR:-${SOCAT_PEERADDR:-a peer}}"
    "${backup[@]}" || status=$?
    rm -rf -- "$target"
    ((status == 0)) || die "${backup[0]} exited $status"
    log "backup stream finished"
}

wait_for_server() {
    local options=$1 wait=${SERVER_WAIT_SECONDS:-600}
    require_uint SERVER_WAIT_SECONDS "$wait"
    local deadline=$((SECONDS + wait)) error
    # The client's last error is kept for the failure message: "not in time" alone hides
    # whether the socket is missing, root's password is wrong or the server refuses.
    until error=$(run_sql "$options" <<<'SELECT 1' 2>&1 >/dev/null); do
        ((SECONDS < deadline)) \
            || die "the local server did not accept connections within ${wait}s; last error: $error"
        sleep 0.5
    done
}

configure_replication_once() {
    local configured="$DATA_DIR/$REPLICATION_CONFIGURED_MARKER"
    local started="$DATA_DIR/$REPLICATION_STARTED_MARKER"
    # A sidecar SIGKILLed inside write_marker left a temp file beside the marker.
    remove_marker_temps "$DATA_DIR" "$REPLICATION_CONFIGURED_MARKER" "$REPLICATION_STARTED_MARKER"
    if [[ -f "$configured" && -f "$started" ]]; then
        log "replication was configured for this clone already: leaving it to the server"
        return 0
    fi
    if [[ ! -f "$DATA_DIR/$CLONE_COMPLETE_MARKER" ]] && holds_first_primary_data "$DATA_DIR"; then
        log "this server was the first primary; the switchover that demoted it configured its" \
            "replication, which the server keeps: leaving it to the server"
        return 0
    fi
    [[ -f "$DATA_DIR/$CLONE_COMPLETE_MARKER" ]] \
        || die "no completed clone in $DATA_DIR: the clone init container must run first"
    require_vars REPLICATION_USER
    read_secret ROOT_PASSWORD
    read_secret REPLICATION_PASSWORD
    local options
    options=$(root_options_file)
    # Root's option file exists only while replication is being configured, even on failure.
    # shellcheck disable=SC2064
    trap "rm -f -- $(printf '%q' "$options")" EXIT
    write_client_options "$options" root "$ROOT_PASSWORD" socket "$(server_socket)"
    log "waiting for the local server"
    wait_for_server "$options"

    if [[ ! -f "$configured" ]]; then
        local gtid source_host source_port current
        gtid=$(backup_gtid "$DATA_DIR")
        local authority
        authority=$(recorded_authority)
        source_host=$(peer_host "$authority")
        source_port=$(peer_port "$MYSQL_PORT" "$authority")
        if replica_position_is_kept; then
            # A pod restart between CHANGE MASTER and the marker lets the server start the
            # replica by itself; setting gtid_slave_pos again would rewind it and re-apply
            # transactions. Only a position still at the clone's (or unset) may be set.
            current=$(run_sql "$options" <<<'SELECT @@GLOBAL.gtid_slave_pos')
            # Ahead of the clone's position, not merely different: a donor that was a replica
            # before it was promoted hands down its own, older gtid_slave_pos.
            if [[ -n "$current" && "$current" != "$gtid" ]] && mariadb_gtid_reached "$current" "$gtid"; then
                log "gtid_slave_pos '$current' is past the clone's '$gtid': replication already" \
                    "ran, so it was configured; not rewinding it"
                write_marker "$configured" "gtid=$current" "source=already configured" \
                    "at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
            fi
        else
            # Auto-positioning starts from gtid_executed (never rewinds); only what the restore
            # lacks is added to gtid_purged.
            gtid=$(missing_gtids_sql "$gtid" | run_sql "$options")
            gtid=${gtid//[[:space:]]/}
        fi
    fi
    if [[ ! -f "$configured" ]]; then
        log "configuring replication from $source_host:$source_port at '$gtid'"
        replication_configure_sql "$gtid" "$source_host" "$source_port" \
            "$REPLICATION_USER" "$REPLICATION_PASSWORD" | run_sql "$options"
        write_marker "$configured" "gtid=$gtid" "source=$source_host:$source_port" \
            "at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    fi
    replication_start_sql | run_sql "$options"
    write_marker "$started" "at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    rm -f "$options"
    trap - EXIT
    log "replication started"
}

serve() {
    require_vars POD_NAME DATA_DIR RUN_DIR CONFIG_DIR MYSQL_PORT BACKUP_PORT BACKUP_USER
    require_flavor
    local ordinal pid_file
    ordinal=$(pod_ordinal)
    pid_file=$(backup_listener_pid_file)
    rm -f -- "$pid_file"
    transport_tool >/dev/null  # fail at once, not after replication was configured
    transport_tls_check        # likewise for a TLS Secret the listener could not serve with
    if [[ -n "${TLS_DIR:-}" ]] && ! command -v flock >/dev/null 2>&1; then
        die "flock (util-linux) is not installed: under TLS the listener follows certificate" \
            "rotation between streams, which a lock held by each stream tells"
    fi
    read_secret BACKUP_PASSWORD
    mkdir -p "$RUN_DIR"
    # A sidecar SIGKILLed inside write_marker or write_client_options left a temp file, perhaps
    # holding a password; only this container writes these names.
    remove_marker_temps "$RUN_DIR" "${pid_file##*/}" "$(basename "$(backup_options_file)")" \
        "$(basename "$(root_options_file)")"
    # Leftovers of streams whose peer went away mid-way (the backup tool died with it).
    find "${TMPDIR:-/tmp}" -mindepth 1 -maxdepth 1 -name 'mysql-cluster-stream.*' \
        -exec rm -rf -- {} +
    if ((ordinal != $(recorded_authority))); then
        require_vars PEER_HOST_TEMPLATE
        configure_replication_once
    fi
    # The socket under TLS (requireSecureTransport refuses plaintext TCP): lib.sh.
    write_local_client_options "$(backup_options_file)" "$BACKUP_USER" "$BACKUP_PASSWORD" \
        "$(local_mysql_port)"
    local port
    port=$(peer_port "$BACKUP_PORT" "$ordinal")
    local -a listener
    # CONFIG_DIR is expanded by the per-connection shell, from this environment, so no path has
    # to survive the listener's own argument syntax (socat treats ':' and ',' specially).
    # shellcheck disable=SC2016
    serve_command listener "$port" 'exec bash "$CONFIG_DIR/backup-server.sh" stream'
    if [[ -n "${TLS_DIR:-}" ]] && command -v openssl >/dev/null 2>&1; then
        serve_following_rotation "$pid_file" "$port" "${listener[@]}"
    fi
    if [[ -n "${TLS_DIR:-}" ]]; then
        log "TLS: openssl is not installed, so rotated files cannot be checked before they are" \
            "served: the listener keeps this certificate until the container restarts"
    fi
    log "serving backups on port $port with ${listener[0]} (pid $$)"
    write_marker "$pid_file" "$$"
    exec "${listener[@]}"
}

# --- the listener under TLS, following certificate rotation -------------------------------------
# How long a switch waits, once no stream holds the lock, for the listener's connection
# processes to end. They are then either relaying the last bytes of a finished stream (that
# tail takes moments) or refusing a stream (the lock is ours); ncat's keep the listening
# socket open, so a new listener could not bind while one lives. Past this bound they hold no
# stream (a peer stalled in its handshake, say) and are stopped.
LISTENER_DRAIN_SECONDS=60
LISTENER_PID=""
AWAITED_PID=""  # the helper await is waiting for, stopped with the listener on SIGTERM

# listener_children PID: the PIDs of PID's child processes (one per open connection), from /proc.
listener_children() {
    local stat line ppid
    for stat in /proc/[0-9]*/stat; do
        { read -r line <"$stat"; } 2>/dev/null || continue
        # The fields after the parenthesised command name: state, ppid, ...
        line=${line##*) }
        read -r _ ppid _ <<<"$line"
        if [[ $ppid == "$1" ]]; then
            stat=${stat#/proc/}
            printf '%s\n' "${stat%/stat}"
        fi
    done
}

# start_listener PID_FILE LISTENER...: in the background, without the supervisor's lock
# descriptor; its PID goes to PID_FILE for the probe.
start_listener() {
    local pid_file=$1
    shift
    "$@" 9>&- &
    LISTENER_PID=$!
    write_marker "$pid_file" "$LISTENER_PID"
}

stop_listener() {
    if [[ -n $AWAITED_PID ]]; then kill -TERM "$AWAITED_PID" 2>/dev/null || true; fi
    [[ -n $LISTENER_PID ]] || return 0
    kill -TERM "$LISTENER_PID" 2>/dev/null || true
    wait "$LISTENER_PID" 2>/dev/null || true
    LISTENER_PID=""
AWAITED_PID=""  # the helper await is waiting for, stopped with the listener on SIGTERM
}

# await HELPER_PID: waits for a background helper (a pause, a lock request) while watching the
# listener. A listener that ends on its own ends the container with its exit status, as when
# it was exec'd. (wait -n -p: bash 5.1, which every image has.)
await() {
    local helper=$1 ended="" status=0
    AWAITED_PID=$helper
    wait -n -p ended "$helper" "$LISTENER_PID" || status=$?
    AWAITED_PID=""
    if [[ $ended == "$LISTENER_PID" ]]; then
        kill -TERM "$helper" 2>/dev/null || true
        log "FATAL: the listener (pid $LISTENER_PID) exited with status $status"
        exit "$((status == 0 ? 1 : status))"
    fi
    return "$status"
}

pause() {
    sleep "$1" 9>&- &
    await $!
}

# drain_and_stop_listener: stops the listener once its connection processes are gone (bounded,
# LISTENER_DRAIN_SECONDS), then waits for any that were still there to go, so that the port is
# free for the next one.
drain_and_stop_listener() {
    local deadline=$((SECONDS + LISTENER_DRAIN_SECONDS)) children child
    children=$(listener_children "$LISTENER_PID")
    while [[ -n $children ]] && ((SECONDS < deadline)); do
        pause 0.2
        children=$(listener_children "$LISTENER_PID")
    done
    stop_listener
    [[ -n $children ]] || return 0
    log "TLS: stopping the listener's connection processes $(tr '\n' ' ' <<<"$children")that" \
        "carry no stream after ${LISTENER_DRAIN_SECONDS}s"
    for child in $children; do
        kill -TERM "$child" 2>/dev/null || true
    done
    deadline=$((SECONDS + 10))
    for child in $children; do
        while kill -0 "$child" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    done
}

# serve_following_rotation PID_FILE PORT LISTENER...: never returns. Every TLS_RELOAD_INTERVAL s
# (as tls-reload.sh) it compares the files' digest with the one last seen; files that fail the
# checks (tls_problem) are logged once and not served, the listener keeps the ones it has.
# Good new files: the supervisor takes the stream lock, which waits for a stream in progress
# to end and keeps the next from starting, checks the files again (they may have changed
# while it waited), lets the last connection drain, and starts a new listener on them.
# SIGTERM (the kubelet's, to this main process) stops the listener and ends the container.
serve_following_rotation() {
    local pid_file=$1 port=$2
    shift 2
    local interval seen digest problem
    interval=$(tls_reload_interval)
    exec 9>>"$(stream_lock_file)"
    trap 'stop_listener; exit 143' TERM
    trap 'stop_listener; exit 130' INT
    seen=$(tls_digest)  # before the listener reads them: a change in between is seen next pass
    start_listener "$pid_file" "$@"
    log "serving backups on port $port with $1 (pid $LISTENER_PID), certificate" \
        "$(tls_certificate_summary)(supervisor pid $$ follows rotation every ${interval}s)"
    while true; do
        pause "$interval"
        tls_changed "$seen" digest problem || continue
        seen=$digest
        if [[ -n $problem ]]; then
            log "TLS: not serving the changed files, the listener keeps its certificate: $problem"
            continue
        fi
        log "TLS: the certificate changed: restarting the listener once no stream is in progress"
        # In the background, so that SIGTERM is handled while a stream holds the lock; the lock
        # belongs to the open file description, shared with the helper: it stays ours.
        flock -x 9 &
        await $!
        tls_changed "" digest problem || true
        seen=$digest
        if [[ -n $problem ]]; then
            flock -u 9
            log "TLS: not serving the files changed again meanwhile, the listener keeps its" \
                "certificate: $problem"
            continue
        fi
        drain_and_stop_listener
        start_listener "$pid_file" "$@"
        flock -u 9
        log "TLS: the listener (pid $LISTENER_PID) now serves $(tls_certificate_summary)"
    done
}

case "${1:-serve}" in
    serve) serve ;;
    stream) stream_backup ;;
    *) die "usage: backup-server.sh [serve|stream]" ;;
esac
