#!/usr/bin/env bash
# probe.sh startup|liveness|readiness|backup|agent: the pod's probes (see CONTRACT.md).
#
# The mysql container:
#   startup    the server accepts queries
#   liveness   the server process answers (mysqladmin ping also succeeds on "access denied": a
#              server that is up but refuses the monitor account is not a reason to restart it)
#   readiness  a replica (replication configured): IO and SQL threads running and lag <=
#              MAX_REPLICA_LAG_SECONDS, so readers are never sent to a stale or broken copy.
#              A server that replicates from nobody is the primary (or is being made one): it
#              accepts queries. Writable is not asked: every server starts read-only and only
#              ReplicationInit, after the StatefulSet is Ready, opens the recorded primary; a
#              readiness that waited for that would stall the rollout that precedes it forever.
#              Which Service sends clients where is the role label's job (moved with the record),
#              so the role is read from the server here, never from the ordinal or a mounted
#              copy of the record that the kubelet refreshes late.
# The monitor account connects over TCP to 127.0.0.1 with an option file in RUN_DIR (0600); its
# password is read from the credentials volume (read_secret). With TLS on (TLS_DIR set) it uses
# the pod-local socket instead: requireSecureTransport leaves the socket open, and no
# certificate has to name 127.0.0.1. Readiness then also checks the mounted certificate
# (tls_problem): a server started with a broken pair carries on without TLS, which a query
# over the socket would not notice.
#
# The backup container (startup and liveness probe):
#   backup     the listener backup-server.sh exec'd (under TLS: started, and restarted on a
#              rotated certificate) is alive and holds the listening socket on this pod's
#              backup port. Checked in /proc only, never by connecting: every
#              connection to the backup port starts a full backup stream. Fails while the
#              sidecar is still configuring replication (no listener yet), which is what the
#              sidecar's startup probe waits out. Needs no password.
# The backup-agent container (liveness probe):
#   agent      the same check for the listener backup-agent.sh exec'd on its agent port: a
#              connection there is read as a backup request, so it is not probed by one either.
set -euo pipefail
SCRIPT_NAME=probe
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

# replica_status_ready MAX_LAG < `SHOW REPLICA STATUS` in vertical format; prints why not ready.
# A stopped or retrying thread is reported with the last IO and SQL error number and text the
# server recorded (the same column names in MariaDB and MySQL 8.4): "IO thread is 'No'" alone
# hides the cause, e.g. error 1236 when the primary has purged binlogs this replica still needs,
# or 1045 after a replication password change.
replica_status_ready() {
    local max_lag=$1 key value io="" sql="" lag="" seen=no
    local io_errno="" io_error="" sql_errno="" sql_error="" errors=""
    local io_key sql_key lag_key keys
    keys=$(replica_status_keys)
    read -r io_key sql_key lag_key <<<"$keys"
    while IFS=: read -r key value; do
        key=${key//[[:space:]]/}
        value=${value#"${value%%[![:space:]]*}"}
        case "$key" in
            "$io_key") io=$value seen=yes ;;
            "$sql_key") sql=$value ;;
            "$lag_key") lag=$value ;;
            Last_IO_Errno) io_errno=$value ;;
            Last_IO_Error) io_error=$value ;;
            Last_SQL_Errno) sql_errno=$value ;;
            Last_SQL_Error) sql_error=$value ;;
        esac
    done
    [[ $seen == yes ]] || { echo "replication is not configured"; return 1; }
    if [[ $io_errno =~ ^[1-9][0-9]*$ ]]; then errors+="; last IO error $io_errno: $io_error"; fi
    if [[ $sql_errno =~ ^[1-9][0-9]*$ ]]; then errors+="; last SQL error $sql_errno: $sql_error"; fi
    [[ $io == Yes ]] || { echo "IO thread is '$io'$errors"; return 1; }
    [[ $sql == Yes ]] || { echo "SQL thread is '$sql'$errors"; return 1; }
    [[ "$lag" =~ ^[0-9]+$ ]] || { echo "lag is unknown ('$lag')"; return 1; }
    ((lag <= max_lag)) || { echo "lag ${lag}s exceeds ${max_lag}s"; return 1; }
}

# listener_serving PID_FILE PORT WHY_MISSING: prints why not and fails unless the PID in a
# sidecar's PID file is alive and holds a socket listening on PORT (IPv4 or IPv6). The PID must
# own the socket, not merely exist: a stale file from an earlier container instance may name a
# PID that is now something else (in a container, PID 1 is whatever started last). The backup
# sidecar's listener and the backup agent's are both checked this way.
listener_serving() {
    local pid_file=$1 port=$2 why_missing=$3 pid="" stat state hex fd link
    if [[ ! -f "$pid_file" ]]; then
        echo "no listener yet ($pid_file is missing): $why_missing"
        return 1
    fi
    read -r pid <"$pid_file" || true
    [[ "$pid" =~ ^[1-9][0-9]*$ ]] || { echo "$pid_file holds no PID"; return 1; }
    { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || { echo "listener process $pid is gone"; return 1; }
    # The state is the first field after the parenthesised command name.
    state=${stat##*) }
    state=${state%% *}
    [[ $state != [ZX] ]] || { echo "listener process $pid has exited"; return 1; }

    hex=$(printf '%04X' "$port")
    local -A listening=()
    local table line _sl address _remote st _queues _timer _retransmits _uid _timeout inode _rest
    local -a lines
    for table in "/proc/$pid/net/tcp" "/proc/$pid/net/tcp6"; do
        [[ -r "$table" ]] || continue
        # Read in one go: `read` takes /proc files byte by byte (0.8 s for 800 sockets).
        mapfile -t lines <"$table"
        for line in "${lines[@]}"; do
            # sl local_address rem_address st ... inode; st 0A is LISTEN, and no other
            # field can be " 0A " (the rest are hex pairs with ':' or decimal).
            [[ $line == *" 0A "* ]] || continue
            read -r _sl address _remote st _queues _timer _retransmits _uid _timeout inode _rest \
                <<<"$line"
            if [[ $st == 0A && ${address##*:} == "$hex" ]]; then
                listening[$inode]=1
            fi
        done
    done
    ((${#listening[@]} > 0)) || { echo "nothing listens on port $port (listener pid $pid)"; return 1; }
    for fd in "/proc/$pid/fd/"*; do
        link=$(readlink "$fd" 2>/dev/null) || continue
        if [[ $link =~ ^socket:\[([0-9]+)\]$ && -n "${listening[${BASH_REMATCH[1]}]:-}" ]]; then
            return 0
        fi
    done
    echo "port $port listens, but not in process $pid from $pid_file"
    return 1
}

main() {
    local mode=${1:-}
    require_flavor
    case "$mode" in
        backup | agent)
            require_vars POD_NAME RUN_DIR
            local reason
            if [[ $mode == backup ]]; then
                require_vars BACKUP_PORT
                reason=$(listener_serving "$(backup_listener_pid_file)" \
                    "$(peer_port "$BACKUP_PORT" "$(pod_ordinal)")" \
                    "replication setup still running, or the sidecar stopped before serving") \
                    || die "backup listener not serving: $reason"
            else
                require_vars BACKUP_AGENT_PORT
                reason=$(listener_serving "$(agent_listener_pid_file)" \
                    "$(peer_port "$BACKUP_AGENT_PORT" "$(pod_ordinal)")" \
                    "the agent has not started serving") || die "backup agent not serving: $reason"
            fi
            return 0
            ;;
        startup | liveness | readiness) ;;
        *) die "usage: probe.sh startup|liveness|readiness|backup|agent" ;;
    esac
    require_vars POD_NAME RUN_DIR MYSQL_PORT MONITOR_USER
    read_secret MONITOR_PASSWORD
    local ordinal options="$RUN_DIR/monitor-client.cnf"
    # A probe stopped between the option file's mktemp and its rename would leave the temp
    # file (it holds the monitor password): signals end the script through its EXIT trap,
    # which removes it. SIGKILL (the kubelet's timeout) cannot be trapped: such a leftover is
    # removed by a later probe once it is older than any probe lives (timeoutSeconds 5), so
    # the temp file of a probe running right now is never touched.
    trap remove_unfinished_client_options EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
    find "$RUN_DIR" -mindepth 1 -maxdepth 1 -type f -name 'monitor-client.cnf.??????' -mmin +1 \
        -delete 2>/dev/null || true
    ordinal=$(pod_ordinal)
    write_local_client_options "$options" "$MONITOR_USER" "$MONITOR_PASSWORD" \
        "$(peer_port "$MYSQL_PORT" "$ordinal")"
    case "$mode" in
        startup)
            run_sql "$options" <<<'SELECT 1' >/dev/null
            ;;
        liveness)
            "$(admin_tool)" --defaults-file="$options" --connect-timeout=5 ping >/dev/null
            ;;
        readiness)
            if [[ -n "${TLS_DIR:-}" ]]; then
                local problem
                problem=$(tls_problem)
                [[ -z $problem ]] || die "TLS: $problem"
            fi
            require_vars MAX_REPLICA_LAG_SECONDS
            require_uint MAX_REPLICA_LAG_SECONDS "$MAX_REPLICA_LAG_SECONDS"
            local status reason
            status=$("$(sql_client_tool)" --defaults-file="$options" --connect-timeout=10 \
                --vertical <<<'SHOW REPLICA STATUS')
            if [[ -n "$status" ]]; then
                reason=$(replica_status_ready "$MAX_REPLICA_LAG_SECONDS" <<<"$status") \
                    || die "replica not ready: $reason"
            fi
            ;;
    esac
}

# Sourced by the unit tests for replica_status_ready; run by the kubelet otherwise.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
