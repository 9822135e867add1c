#!/usr/bin/env bash
# verify.sh: restore the newest backup plus every archived binlog into a scratch server and
# record what it holds next to the backup (backups/<id>/verification.json).
#
# A backup nobody restored is a hope, not a backup. This runs the real restore path
# (restore.sh fetch + apply: checksums, gap check, prepare, replay) into a throwaway data dir,
# then checks that the server reached exactly the GTID position the archive promises (the
# newest archived GTID of each domain) and records that position and a CHECKSUM TABLE of every
# user table. A failure is recorded too, with its reason, and the script exits non-zero.
#
# Environment: that of backup.sh (S3_*), plus ROOT_PASSWORD_FILE (the source cluster's root:
# the accounts live in the restored data), VERIFY_WORK_DIR (scratch; default under TMPDIR),
# VERIFY_RUN_DIR (the scratch server's socket and the root client option file, which holds a
# password: the CronJob gives a memory volume; default WORK/run), MARIADBD (default mariadbd),
# VERIFY_BACKUP (default latest). The scratch server listens on a unix socket in the run dir
# only (--skip-networking) and is stopped by the PID started here. A work or run dir given is
# a volume's mount point: its contents are removed at the end, never the directory.
set -euo pipefail
SCRIPT_NAME="verify"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"
# shellcheck source-path=SCRIPTDIR source=private-server.sh
source "$CONFIG_DIR/private-server.sh"

work="" run="" made_work=false backup_id="" recorded=false

empty_dir() {
    find "$1" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + 2>/dev/null || true
}

cleanup() {
    local status=$?
    private_server_stop || true
    # Any other way this ends early (the scratch server would not start, a query failed) is
    # a failed verification of the backup too: never a silent gap in its record.
    if ((status != 0)) && [[ -n "$backup_id" && $recorded == false ]]; then
        { failure_result "verify.sh stopped (exit $status) before it finished; the Job's log says why" \
            && record "$backup_id" "$work/result.json"; } || true
    fi
    [[ -z "$run" ]] || empty_dir "$run"
    if [[ $made_work == true ]]; then
        rm -rf -- "$work"
    elif [[ -n "$work" ]]; then
        empty_dir "$work"
    fi
}

record() {  # record BACKUP_ID JSON_FILE
    local -a mysqlbackup
    mysqlbackup_command mysqlbackup
    recorded=true
    "${mysqlbackup[@]}" record-verification --id "$1" --result "$2"
}

failure_result() {  # failure_result REASON: $work/result.json for a failed verification
    "${MYSQLBACKUP_PYTHON:-python3}" -c \
        'import json,sys; print(json.dumps({"ok": False, "error": sys.argv[1]}))' "$1" \
        >"$work/result.json"
}

# fail BACKUP_ID REASON: records {"ok": false, "error": REASON} against the backup and exits
# non-zero, so a failed verification is both in the store and a failed Job.
fail() {
    failure_result "$2"
    record "$1" "$work/result.json"
    die "backup $1 did not verify: $2"
}

# logged FILE COMMAND...: COMMAND's stderr goes to ours (the Job's log, as it comes) and to
# FILE, whose last lines name what failed; its stdout is ours; its status is COMMAND's.
logged() {
    local file=$1
    shift
    { "$@" 2>&1 >&3 3>&- | tee "$file" >&2; } 3>&1
}

last_lines() { tail -n 3 "$1" | tr '\n' ' '; }

# The newest complete backup, resolved here rather than by restore.sh's plan: a plan that
# fails (a gap in the archive) writes nothing, and the failure must still be recorded
# against the backup it was for.
newest_backup() {
    local -a mysqlbackup
    mysqlbackup_command mysqlbackup
    "${mysqlbackup[@]}" list | "${MYSQLBACKUP_PYTHON:-python3}" -c \
        'import json,sys; c=json.load(sys.stdin)["complete"]; print(c[-1]["id"] if c else "")'
}

main() {
    require_flavor
    require_vars S3_ENDPOINT S3_BUCKET S3_ACCESS_KEY_FILE S3_SECRET_KEY_FILE
    if [[ -n "${VERIFY_WORK_DIR:-}" ]]; then
        work=$VERIFY_WORK_DIR
    else
        work=$(mktemp -d "${TMPDIR:-/tmp}/mysql-cluster-verify.XXXXXX")
        made_work=true
    fi
    run=${VERIFY_RUN_DIR:-$work/run}
    trap cleanup EXIT
    mkdir -p "$work/data" "$run"
    chmod 0700 "$run"
    local socket="$run/mysqld.sock"
    local wanted=${VERIFY_BACKUP:-latest}
    if [[ $wanted == latest ]]; then
        wanted=$(newest_backup)
        [[ -n "$wanted" ]] || die "the store holds no complete backup: nothing to verify"
    fi
    backup_id=$wanted
    log "verifying backup $backup_id"
    local -a env=(DATA_DIR="$work/data" RUN_DIR="$run" RESTORE_WORK_DIR="$work/restore"
        RESTORE_BACKUP="$backup_id" RESTORE_POINT=end MYSQL_SOCKET="$socket")
    local status=0
    logged "$work/fetch.err" env "${env[@]}" bash "$CONFIG_DIR/restore.sh" fetch || status=$?
    ((status == 0)) || fail "$backup_id" "restore.sh fetch exited $status: $(last_lines "$work/fetch.err")"
    local promised
    promised=$("${MYSQLBACKUP_PYTHON:-python3}" -c \
        'import json,sys; print(json.load(open(sys.argv[1]))["stop_position"] or "")' "$work/restore/plan.json")
    private_server_start "$run" "$work/data" --no-defaults --log-bin=mysql-bin \
        --log-bin-index=mysql-bin.index --server-id=4294967295 --gtid-strict-mode=ON
    local reached
    if ! reached=$(logged "$work/apply.err" env "${env[@]}" bash "$CONFIG_DIR/restore.sh" apply \
        | tail -n 1); then
        fail "$backup_id" "replaying the archive failed: $(last_lines "$work/apply.err")"
    fi
    read_secret ROOT_PASSWORD
    write_client_options "$run/root.cnf" root "$ROOT_PASSWORD" socket "$socket"
    local tables checksums
    tables=$(run_sql "$run/root.cnf" <<<"SELECT CONCAT('\`', table_schema, '\`.\`', table_name, '\`') FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1" | paste -sd, -)
    checksums=""
    if [[ -n "$tables" ]]; then
        checksums=$(run_sql "$run/root.cnf" <<<"CHECKSUM TABLE $tables")
    fi
    local ok=true
    [[ -z "$promised" || "$reached" == "$promised" ]] || ok=false
    "${MYSQLBACKUP_PYTHON:-python3}" -c '
import json, sys
ok, reached, promised, text = sys.argv[1] == "true", sys.argv[2], sys.argv[3], sys.argv[4]
tables = {}
for line in text.splitlines():
    name, _, value = line.rpartition("\t")
    tables[name] = None if value == "NULL" else int(value)
print(json.dumps({"ok": ok, "gtid": reached, "promised_gtid": promised, "checksums": tables}))
' "$ok" "$reached" "$promised" "$checksums" >"$work/result.json"
    record "$backup_id" "$work/result.json"
    cat "$work/result.json"
    [[ $ok == true ]] || die "backup $backup_id restored to '$reached', the archive promises '$promised'"
    log "backup $backup_id verified at '$reached'"
}

main "$@"
