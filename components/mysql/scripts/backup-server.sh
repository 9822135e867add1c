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
# Liveness: just before the listener is exec'd, its PID (this shell's, which exec keeps) goes
# to backup_listener_pid_file, for `probe.sh backup`, which checks that this PID holds the
# listening socket without ever connecting (a connection starts a backup). The file is removed
# first thing at every start: RUN_DIR outlives a container restart, and a stale PID must not
# vouch for a new container that is still configuring replication.
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

# One backup, streamed to stdout (the listener connects stdout to the peer).
stream_backup() {
    require_vars POD_NAME DATA_DIR RUN_DIR
    local ordinal target is_replica=no status=0
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
    log "serving backups on port $port with ${listener[0]} (pid $$)"
    write_marker "$pid_file" "$$"
    exec "${listener[@]}"
}

case "${1:-serve}" in
    serve) serve ;;
    stream) stream_backup ;;
    *) die "usage: backup-server.sh [serve|stream]" ;;
esac
