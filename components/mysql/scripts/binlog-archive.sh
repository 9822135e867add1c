#!/usr/bin/env bash
# binlog-archive.sh: continuous binary-log archiving from the primary into the object store.
#
#   binlog-archive.sh        loop: every ARCHIVE_INTERVAL_SECONDS (default 10), rotate the
#                            binary log if anything was written since the last rotation, then
#                            upload every closed binary log not archived yet
#   binlog-archive.sh once   one pass (tests, and a final pass before a switchover)
#   binlog-archive.sh alive  the container's startup and liveness probe: the loop's heartbeat
#                            is at most ARCHIVE_STALL_SECONDS old
#
# The loop keeps one `python -m mysqlbackup archive-serve` as its coprocess and asks it for a
# pass right after each rotation: a fresh interpreter per pass (importing boto3) cost 1-5 s
# under load, which is what pushed the recovery point past the interval. The ticks are a fixed
# cadence (tick N at start + N * interval), so a slow pass shortens the next wait instead of
# delaying every later rotation. A tick that does not archive sends `idle` instead; with
# ARCHIVE_METRICS_PORT set the coprocess serves the backup gauges (mysqlbackup/metrics.py).
#
# The loop follows the primary: at every tick it reads the primary record (RECORD_DIR, a
# ConfigMap volume the kubelet keeps current) and rotates and archives only while this pod is
# the recorded primary, so every pod can run the sidecar and a switchover moves the archiving
# without a restart. While the record is fenced (`none`) nobody archives; the new primary's
# first tick uploads everything closed since.
#
# Why rotate: only a closed binary log can be archived whole, so the forced rotation bounds
# the recovery point by the interval (plus one upload). Rotating only when gtid_binlog_pos
# moved keeps an idle server from filling the store with empty files. Each upload is followed
# by its record (GTID range, times, sha256), which is what a restore trusts; an object without
# a record is ignored, so a pass killed mid-upload is simply redone by the next one.
#
# Liveness: a dead coprocess or server ends the script (the container restarts), but a pass
# stuck in an upload (a store that accepted the connection and never answers) or a statement
# that never returns would block the loop forever with every process alive. So the loop writes
# the time to `$RUN_DIR/binlog-archive.heartbeat` at every tick, primary or not, after the
# tick's work; `alive` fails once that time is older than ARCHIVE_STALL_SECONDS (default
# 3 x the interval + 120 s, room for one slow upload), naming the age, and the kubelet restarts
# the container. The heartbeat is removed first thing at every start: RUN_DIR outlives a
# container restart, and a stale one must not vouch for a loop that is not running yet.
#
# Runs beside the server (binary logs are in DATA_DIR) as the backup account, which holds
# RELOAD (FLUSH BINARY LOGS) and BINLOG MONITOR; password through read_secret into a 0600
# option file, store keys through the files S3_*_KEY_FILE name (see backup.sh).
set -euo pipefail
SCRIPT_NAME="binlog-archive"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

rotate_if_written() {
    local options=$1 position
    position=$(run_sql "$options" <<<'SELECT @@GLOBAL.gtid_binlog_pos')
    if [[ "$position" != "${last_rotated_at:-}" ]]; then
        run_sql "$options" <<<'FLUSH BINARY LOGS'
        last_rotated_at=$position
    fi
}

archive_pass() {
    rotate_if_written "$1"
    "${mysqlbackup[@]}" archive-binlogs --binlog-dir "$DATA_DIR" --index mysql-bin.index \
        --server-id "$server_id"
}

heartbeat_file() {
    require_vars RUN_DIR
    printf '%s\n' "$RUN_DIR/binlog-archive.heartbeat"
}

# stall_seconds INTERVAL: how old the heartbeat may get before the loop counts as hung.
stall_seconds() {
    local stall=${ARCHIVE_STALL_SECONDS:-$((3 * $1 + 120))}
    require_uint ARCHIVE_STALL_SECONDS "$stall"
    printf '%s\n' "$stall"
}

beat() {
    write_marker "$(heartbeat_file)" "$EPOCHSECONDS"
}

# The probe: reads the heartbeat only (no password, no connection), so it is cheap and cannot
# hang on what the loop hangs on.
alive() {
    local interval=${ARCHIVE_INTERVAL_SECONDS:-10} file beat_at stall age
    require_uint ARCHIVE_INTERVAL_SECONDS "$interval"
    stall=$(stall_seconds "$interval")
    file=$(heartbeat_file)
    [[ -f "$file" ]] || die "no heartbeat yet in $file: the archive loop has not started"
    beat_at=$(<"$file")
    require_uint "the heartbeat in $file" "$beat_at"
    age=$((EPOCHSECONDS - beat_at))
    ((age <= stall)) || die "the archive loop's last heartbeat is ${age}s old (more than" \
        "${stall}s): it is stuck in a pass (an upload or a statement that never returns)"
}

# Microseconds since the epoch, from bash itself (no process per tick).
now_us() {
    local now=${EPOCHREALTIME/[.,]/}
    printf '%s\n' "$((10#$now))"
}

# archive_loop OPTIONS INTERVAL: rotation at every tick, the coprocess's pass at once after it.
archive_loop() {
    local options=$1 interval_us=$(($2 * 1000000)) next remaining answer ordinal role
    local last_role=""
    ordinal=$(pod_ordinal)
    coproc ARCHIVER { exec "${mysqlbackup[@]}" archive-serve --binlog-dir "$DATA_DIR" \
        --index mysql-bin.index --server-id "$server_id"; }
    # The coprocess's descriptors, copied: bash unsets ARCHIVER once the process exits.
    local to_archiver=${ARCHIVER[1]} from_archiver=${ARCHIVER[0]}
    next=$(now_us)
    beat
    while true; do
        next=$((next + interval_us))
        role=$(recorded_role "$ordinal")
        if [[ "$role" != "$last_role" ]]; then
            log "this pod is the recorded $role (archiving only while primary)"
            last_role=$role
        fi
        if [[ "$role" == primary ]]; then
            rotate_if_written "$options" || log "rotation failed; retrying at the next tick"
            printf 'pass\n' >&"$to_archiver" || die "the archiver process exited"
            IFS= read -r answer <&"$from_archiver" || die "the archiver process exited"
            [[ "$answer" != '{"error"'* ]] || log "archive pass failed: $answer"
        else
            # No answer: the line only tells the backup gauges (mysqlbackup/metrics.py) that
            # this pod has nothing to archive, so its archive lag is 0, not its idle time.
            printf 'idle\n' >&"$to_archiver" || die "the archiver process exited"
        fi
        beat
        remaining=$((next - $(now_us)))
        if ((remaining > 0)); then
            # A schedule, not a condition: the next tick is due at a fixed time.
            sleep "$((remaining / 1000000)).$(printf "%06d" $((remaining % 1000000)))"
        else
            next=$(now_us)
        fi
    done
}
main() {
    if [[ "${1:-}" == alive ]]; then
        alive
        return 0
    fi
    require_flavor
    if [[ "${1:-}" != once ]]; then
        rm -f -- "$(heartbeat_file)"
        remove_marker_temps "$RUN_DIR" "$(basename "$(heartbeat_file)")"
    fi
    require_vars DATA_DIR RUN_DIR BACKUP_USER S3_ENDPOINT S3_BUCKET S3_ACCESS_KEY_FILE \
        S3_SECRET_KEY_FILE
    require_mariadb "binlog archiving supports"
    local interval=${ARCHIVE_INTERVAL_SECONDS:-10} options
    require_uint ARCHIVE_INTERVAL_SECONDS "$interval"
    ((interval > 0)) || die "ARCHIVE_INTERVAL_SECONDS must be at least 1"
    read_secret BACKUP_PASSWORD
    options="$RUN_DIR/binlog-archive-client.cnf"
    # shellcheck disable=SC2064
    trap "rm -f -- $(printf '%q' "$options")" EXIT
    write_client_options "$options" "$BACKUP_USER" "$BACKUP_PASSWORD" socket "$(server_socket)"
    mysqlbackup_command mysqlbackup
    server_id=$(run_sql "$options" <<<'SELECT @@server_id')
    require_uint server_id "$server_id"
    last_rotated_at=""
    if [[ "${1:-}" == once ]]; then
        archive_pass "$options"
        return 0
    fi
    log "archiving binary logs of server_id $server_id every ${interval}s to $S3_BUCKET"
    archive_loop "$options" "$interval"
}

declare -a mysqlbackup
server_id=""
last_rotated_at=""
main "$@"
