#!/usr/bin/env bash
# backup-agent.sh: sidecar container `backup-agent` (the backup agent image), in every pod when
# mysql.backup.enabled: runs a scheduled backup of this pod's server when the backup Job asks.
#
#   backup-agent.sh [serve]   listen on BACKUP_AGENT_PORT (+ ordinal * PORT_STRIDE), one
#                             connection at a time, each answered by `request`
#   backup-agent.sh request   one connection: read `backup SLOT TOKEN replica|primary`, answer
#                             (mysqlbackup/schedule.py has the protocol)
#
# Why the backup runs here and not in the Job: backup.sh needs the server's data dir and
# socket, and only a container of the server's own pod can mount them (ReadWriteOnce PVC).
# The Job holds the cluster lock and decides nothing but the order in which pods are asked;
# each agent decides whether its own pod may serve, from what only the pod knows:
#   replica   accepted only while this pod is a recorded replica whose server passes the
#             readiness rule (probe.sh readiness: replication threads running, lag within
#             MAX_REPLICA_LAG_SECONDS), so a stale or broken copy is never backed up
#   primary   accepted only while this pod is the recorded primary (the Job asks for it only
#             when no replica accepted)
# The readiness check runs as the backup account (it holds SLAVE MONITOR, which SHOW REPLICA
# STATUS needs) with its option file in a directory of its own, so it never touches the
# monitor account's file the mysql container's probes write.
#
# While backup.sh runs, a `log running` line goes to the Job every few seconds. When that write
# fails the Job is gone (its lock lapsed and distlock stopped it, or its pod died): the backup is
# stopped (its whole process group) before it can write a manifest, since no one holds the lock
# for it any more. The manifest records the slot and the lock's fencing token (backup.sh).
set -euo pipefail
SCRIPT_NAME="backup-agent"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

# How often a running backup reports to the Job: how soon a Job that went away is noticed.
readonly BEAT_SECONDS=${BACKUP_AGENT_BEAT_SECONDS:-5}

# reply VERDICT TEXT: one protocol line to the Job (stdout is the connection).
reply() {
    printf '%s %s\n' "$1" "${2//$'\n'/ }"
}

refuse() {
    log "refused: $*"
    reply refused "$*"
    exit 0
}

healthy_replica_problem() {
    local private="$RUN_DIR/backup-agent" problem
    mkdir -p "$private"
    chmod 0700 "$private"
    if problem=$(RUN_DIR=$private MONITOR_USER=$BACKUP_USER \
        MONITOR_PASSWORD_FILE=$BACKUP_PASSWORD_FILE \
        bash "$CONFIG_DIR/probe.sh" readiness 2>&1 >/dev/null); then
        return 1
    fi
    problem=${problem##*FATAL: }
    printf '%s\n' "${problem:-the readiness check failed}"
}

# run_backup SLOT TOKEN: backup.sh in a process group of its own, beating to the Job.
run_backup() {
    local slot=$1 token=$2 work pid beat finished status
    work=$(mktemp -d "${TMPDIR:-/tmp}/mysql-cluster-agent.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf -- $(printf '%q' "$work")" EXIT
    log "backup of slot $slot for lock token $token"
    set -m
    BACKUP_SLOT=$slot BACKUP_FENCING_TOKEN=$token bash "$CONFIG_DIR/backup.sh" \
        </dev/null >"$work/out" 2>"$work/err" &
    pid=$!
    set +m
    reply log "backup of slot $slot started on $POD_NAME"
    while true; do
        # A cadence, not a condition: the wait ends at once when the backup does.
        sleep "$BEAT_SECONDS" &
        beat=$!
        status=0
        finished=""
        wait -n -p finished "$pid" "$beat" || status=$?
        if [[ "$finished" == "$pid" ]]; then
            kill "$beat" 2>/dev/null || true
            wait "$beat" 2>/dev/null || true
            break
        fi
        if ! reply log "running (${SECONDS}s)" 2>/dev/null; then
            log "the Job went away: stopping the backup of slot $slot before its manifest"
            kill -TERM -- "-$pid" 2>/dev/null || true
            wait "$pid" || true
            cat "$work/err" >&2
            exit 1
        fi
    done
    cat "$work/err" >&2
    if ((status == 0)); then
        reply ok "$(tail -n 1 "$work/out")"
        log "backup of slot $slot complete"
    else
        reply failed "backup.sh exited $status: $(tail -n 2 "$work/err")"
    fi
}

request() {
    require_vars POD_NAME RUN_DIR CONFIG_DIR BACKUP_USER BACKUP_PASSWORD_FILE
    require_uint BACKUP_AGENT_BEAT_SECONDS "$BEAT_SECONDS"
    # A Job that went away must not kill this script by SIGPIPE mid-reply: run_backup
    # notices the failed write and stops the backup itself.
    trap '' PIPE
    local line verb slot token mode extra role problem
    IFS= read -r -t 30 line || refuse "no request within 30s"
    line=${line%$'\r'}
    read -r verb slot token mode extra <<<"$line"
    [[ "$verb" == backup && -z "${extra:-}" ]] \
        || refuse "unknown request '$line' (expected: backup SLOT TOKEN replica|primary)"
    [[ "${slot:-}" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$ ]] || refuse "bad slot '${slot:-}'"
    [[ "${token:-}" =~ ^[0-9]+$ ]] || refuse "bad fencing token '${token:-}'"
    [[ "${mode:-}" == replica || "${mode:-}" == primary ]] || refuse "bad mode '${mode:-}'"
    role=$(recorded_role "$(pod_ordinal)")
    [[ "$role" == "$mode" ]] || refuse "$POD_NAME is the recorded $role, not a $mode"
    if [[ "$mode" == replica ]] && problem=$(healthy_replica_problem); then
        refuse "$POD_NAME is not a healthy replica: $problem"
    fi
    run_backup "$slot" "$token"
}

serve() {
    require_vars POD_NAME CONFIG_DIR BACKUP_AGENT_PORT
    require_flavor
    require_mariadb "scheduled backups support"
    local port
    port=$(peer_port "$BACKUP_AGENT_PORT" "$(pod_ordinal)")
    local -a listener
    # shellcheck disable=SC2016  # expanded by the per-connection shell, from this environment
    serve_command listener "$port" 'exec bash "$CONFIG_DIR/backup-agent.sh" request' duplex
    log "serving backup requests on port $port with ${listener[0]}"
    # The listener takes this PID (exec): probe.sh agent checks that it still listens.
    write_marker "$(agent_listener_pid_file)" "$$"
    exec "${listener[@]}"
}

case "${1:-serve}" in
    serve) serve ;;
    request) request ;;
    *) die "usage: backup-agent.sh [serve|request]" ;;
esac
