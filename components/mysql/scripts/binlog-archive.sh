#!/usr/bin/env bash
# binlog-archive.sh: continuous binary-log archiving from the primary into the object store.
#
#   binlog-archive.sh        loop: every ARCHIVE_INTERVAL_SECONDS (default 10), rotate the
#                            binary log if anything was written since the last rotation, then
#                            upload every closed binary log not archived yet
#   binlog-archive.sh once   one pass (tests, and a final pass before a switchover)
#
# Why rotate: only a closed binary log can be archived whole, so the forced rotation bounds
# the recovery point by the interval (plus one upload). Rotating only when gtid_binlog_pos
# moved keeps an idle server from filling the store with empty files. Each upload is followed
# by its record (GTID range, times, sha256), which is what a restore trusts; an object without
# a record is ignored, so a pass killed mid-upload is simply redone by the next one.
#
# Runs beside the server (binary logs are in DATA_DIR) as the backup account, which holds
# RELOAD (FLUSH BINARY LOGS) and BINLOG MONITOR; password through read_secret into a 0600
# option file, store keys through the files S3_*_KEY_FILE name (see backup.sh).
set -euo pipefail
SCRIPT_NAME="binlog-archive"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

archive_pass() {
    local options=$1 position
    position=$(run_sql "$options" <<<'SELECT @@GLOBAL.gtid_binlog_pos')
    if [[ "$position" != "${last_rotated_at:-}" ]]; then
        run_sql "$options" <<<'FLUSH BINARY LOGS'
        last_rotated_at=$position
    fi
    "${mysqlbackup[@]}" archive-binlogs --binlog-dir "$DATA_DIR" --index mysql-bin.index \
        --server-id "$server_id"
}

main() {
    require_flavor
    require_vars DATA_DIR RUN_DIR BACKUP_USER S3_ENDPOINT S3_BUCKET S3_ACCESS_KEY_FILE \
        S3_SECRET_KEY_FILE
    [[ $MYSQL_FLAVOR == mariadb ]] || die "binlog archiving supports MariaDB only so far"
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
    while true; do
        archive_pass "$options" >/dev/null || log "archive pass failed; retrying in ${interval}s"
        sleep "$interval"
    done
}

declare -a mysqlbackup
server_id=""
last_rotated_at=""
main "$@"
