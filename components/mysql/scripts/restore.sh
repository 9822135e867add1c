#!/usr/bin/env bash
# restore.sh: a new primary's data from the object store, up to a point in time.
#
#   restore.sh fetch   choose the backup and the archived binlogs (mysqlbackup plan: fails on a
#                      GTID gap, a point outside what is archived, another flavor or a newer
#                      major), download the backup verifying its sha256, extract, prepare, and
#                      download the binlogs verifying theirs. The server is not running; every
#                      failure here happens before it ever starts on this data.
#   restore.sh apply   with the server running on the restored DATA_DIR: set its GTID state to
#                      the backup's, replay the archived binlogs through mariadb-binlog up to
#                      the point (stop-datetime or stop-position), check the final GTID position
#
# Markers in DATA_DIR, as clone.sh's: `.restore-in-progress` while fetching (a data dir holding
# it, or nothing at all, is ours to wipe; anything else is refused), `.restore-prepared` after
# fetch, `.restore-complete` after apply. Replicas then clone from this server the usual way.
#
# Environment (besides CONTRACT.md's and the S3_* of backup.sh): RESTORE_BACKUP (id or latest,
# default latest), RESTORE_POINT (RFC 3339 or a GTID position; empty: the backup itself),
# RESTORE_WORK_DIR (plan and binlogs; survives from fetch to apply), MARIADBD (the server
# binary whose version the backup must not be newer than; default mariadbd). apply connects
# as root through the socket (ROOT_PASSWORD_FILE): it must write GTID state and replay DDL.
set -euo pipefail
SCRIPT_NAME="restore"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

readonly IN_PROGRESS=$RESTORE_IN_PROGRESS_MARKER PREPARED=$RESTORE_PREPARED_MARKER \
    COMPLETE=$RESTORE_COMPLETE_MARKER

plan_file() { printf '%s\n' "$RESTORE_WORK_DIR/plan.json"; }

# plan_field EXPRESSION: one value from the plan (python, because the plan is JSON).
plan_field() {
    "${MYSQLBACKUP_PYTHON:-python3}" -c 'import json,sys; p=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"p": p}) or "")' \
        "$(plan_file)" "$1"
}

wipe_data_dir() {
    find "$DATA_DIR" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
}

fetch() {
    require_vars DATA_DIR RESTORE_WORK_DIR S3_ENDPOINT S3_BUCKET
    mkdir -p "$DATA_DIR"
    if [[ -f "$DATA_DIR/$IN_PROGRESS" ]]; then
        log "wiping a restore that never finished"
        wipe_data_dir
    elif [[ -f "$DATA_DIR/$PREPARED" || -f "$DATA_DIR/$COMPLETE" ]]; then
        log "the data dir holds a prepared restore already"
        return 0
    elif [[ -n "$(ls -A "$DATA_DIR")" ]]; then
        die "$DATA_DIR is not empty and holds no restore of ours: refusing to touch it"
    fi
    local version
    version=$("${MARIADBD:-mariadbd}" --version)
    [[ "$version" =~ Ver\ ([0-9]+\.[0-9]+\.[0-9]+) ]] || die "cannot read the server version from '$version'"
    version=${BASH_REMATCH[1]}
    local -a mysqlbackup decompress extract prepare
    mysqlbackup_command mysqlbackup
    rm -rf -- "$RESTORE_WORK_DIR"
    mkdir -p "$RESTORE_WORK_DIR"
    "${mysqlbackup[@]}" plan --backup "${RESTORE_BACKUP:-latest}" --point "${RESTORE_POINT:-}" \
        --flavor "$MYSQL_FLAVOR" --server-version "$version" --out "$(plan_file)" >&2
    write_marker "$DATA_DIR/$IN_PROGRESS" "at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    decompress_command decompress "$(plan_field 'p["backup"]["compression"]')"
    extract_command extract "$DATA_DIR"
    log "downloading backup $(plan_field 'p["backup"]["id"]')"
    if ! "${mysqlbackup[@]}" fetch-backup --plan "$(plan_file)" | "${decompress[@]}" \
        | "${extract[@]}"; then
        wipe_data_dir
        die "the backup could not be downloaded and extracted intact; nothing was kept"
    fi
    prepare_command prepare "$DATA_DIR"
    "${prepare[@]}" >"$RESTORE_WORK_DIR/prepare.log" 2>&1 \
        || die "prepare failed: $(tail -n 3 "$RESTORE_WORK_DIR/prepare.log" | tr '\n' ' ')"
    "${mysqlbackup[@]}" fetch-binlogs --plan "$(plan_file)" --dir "$RESTORE_WORK_DIR/binlogs" >&2
    write_marker "$DATA_DIR/$PREPARED" "backup=$(plan_field 'p["backup"]["id"]')" \
        "point=${RESTORE_POINT:-}" "at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    rm -f -- "$DATA_DIR/$IN_PROGRESS"
    log "backup prepared; $(find "$RESTORE_WORK_DIR/binlogs" -type f | wc -l) binlog(s) to apply"
}

apply() {
    require_vars DATA_DIR RUN_DIR RESTORE_WORK_DIR
    [[ -f "$DATA_DIR/$PREPARED" ]] || die "no prepared restore in $DATA_DIR: run restore.sh fetch first"
    if [[ -f "$DATA_DIR/$COMPLETE" ]]; then
        log "restore already applied"
        return 0
    fi
    read_secret ROOT_PASSWORD
    local options start stop_position stop_datetime
    options="$RUN_DIR/restore-root-client.cnf"
    # shellcheck disable=SC2064
    trap "rm -f -- $(printf '%q' "$options")" EXIT
    write_client_options "$options" root "$ROOT_PASSWORD" socket "$(server_socket)"
    start=$(plan_field 'p["start_position"]')
    stop_position=$(plan_field 'p["stop_position"]')
    stop_datetime=$(plan_field 'p["stop_datetime"]')
    validate_gtid_set "$start" || die "the plan's start position '$start' is not a GTID set"
    # The restored server's binary log is empty: give it the backup's GTID state, so replayed
    # and new transactions continue the cluster's sequence instead of starting over.
    printf 'RESET MASTER;\nSET GLOBAL gtid_binlog_state = %s;\nSET GLOBAL gtid_slave_pos = %s;\n' \
        "$(sql_quote "$start")" "$(sql_quote "$start")" | run_sql "$options"
    local -a binlogs=("$RESTORE_WORK_DIR"/binlogs/*)
    if [[ -e "${binlogs[0]}" ]]; then
        local -a replay=(mariadb-binlog "--start-position=$start")
        if [[ -n "$stop_position" ]]; then
            validate_gtid_set "$stop_position" || die "bad stop position '$stop_position'"
            replay+=("--stop-position=$stop_position")
        fi
        [[ -z "$stop_datetime" ]] || replay+=("--stop-datetime=$stop_datetime")
        log "replaying ${#binlogs[@]} binlog(s) after $start up to ${stop_position:-${stop_datetime:-the end}}"
        # TZ=UTC: mariadb-binlog reads --stop-datetime in its local zone; the plan's is UTC.
        TZ=UTC "${replay[@]}" "${binlogs[@]}" | run_sql "$options" \
            || die "replaying the archived binlogs failed"
    fi
    local reached
    reached=$(run_sql "$options" <<<'SELECT @@GLOBAL.gtid_binlog_pos')
    if [[ -n "$stop_position" && "$reached" != "$stop_position" ]]; then
        die "replay ended at '$reached', not at the requested '$stop_position'"
    fi
    write_marker "$DATA_DIR/$COMPLETE" "gtid=$reached" "at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    rm -f -- "$options"
    trap - EXIT
    log "restore complete at GTID '$reached'"
    printf '%s\n' "$reached"
}

require_flavor
require_mariadb "restores support"
case "${1:-}" in
    fetch) fetch ;;
    apply) apply ;;
    *) die "usage: restore.sh fetch|apply" ;;
esac
