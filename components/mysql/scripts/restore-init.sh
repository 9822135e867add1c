#!/usr/bin/env bash
# restore-init.sh: init container `restore` (the backup agent image) when mysql.restore is set.
#
# A new cluster created from the object store: the first primary's data dir is restored
# (restore.sh fetch: plan, verified download, prepare; then restore.sh apply: the archived
# binlogs replayed to RESTORE_POINT) before its server ever starts, and every other pod then
# clones from it as usual (clone.sh). Every pod runs this container; only the record's
# authority (ordinal 0 before any record) restores, the others return at once.
#
# The replay needs a running server, and the pod's own must not start on a half-restored data
# dir (clients, probes and replicas would see it): so apply runs against a private server
# (private-server.sh: no TCP, a socket in this container's work dir, the pod's own server
# config so the binary log, GTID state and server_id are those the pod's server will use),
# which is shut down cleanly before the container ends.
#
# Never over existing data: a data dir with anything in it but one of our restore markers is
# refused with a message that names it. Markers (restore.sh): `.restore-in-progress` (fetch
# began: ours to wipe), `.restore-prepared` (fetched, not yet replayed), `.restore-complete`.
# A data dir holding `.restore-complete` is a restored server: re-running does nothing. One
# holding `.restore-prepared` but not `.restore-complete` was interrupted during the replay,
# which cannot be resumed (part of the binlogs may be applied, and the work dir with the rest
# is an emptyDir gone with the old pod): it is marked in progress again and restored anew. The
# server has never served from it, so nothing anyone saw is lost.
#
# Environment: the pod's (CONTRACT.md), S3_* and the store key files as binlog-archive.sh,
# RESTORE_BACKUP / RESTORE_POINT as restore.sh, RESTORE_WORK_DIR (default
# $TMPDIR/mysql-cluster-restore), ROOT_PASSWORD_FILE (the source cluster's root: the accounts
# are in the restored data), MARIADBD_DEFAULTS_FILE (unset: the server reads its own config,
# /etc/mysql/my.cnf, which includes CONF_DIR).
set -euo pipefail
SCRIPT_NAME="restore-init"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"
# shellcheck source-path=SCRIPTDIR source=private-server.sh
source "$CONFIG_DIR/private-server.sh"

readonly IN_PROGRESS=$RESTORE_IN_PROGRESS_MARKER PREPARED=$RESTORE_PREPARED_MARKER \
    COMPLETE=$RESTORE_COMPLETE_MARKER

main() {
    require_flavor
    require_vars POD_NAME DATA_DIR RUN_DIR S3_ENDPOINT S3_BUCKET S3_ACCESS_KEY_FILE \
        S3_SECRET_KEY_FILE
    require_mariadb "restores support"
    local ordinal authority
    ordinal=$(pod_ordinal)
    authority=$(recorded_authority)
    if ((ordinal != authority)); then
        log "ordinal $ordinal is not the first primary (ordinal $authority): it clones from the restored one"
        return 0
    fi
    mkdir -p "$DATA_DIR"
    remove_marker_temps "$DATA_DIR" "$IN_PROGRESS" "$PREPARED" "$COMPLETE"
    if [[ -f "$DATA_DIR/$COMPLETE" ]]; then
        log "the data dir is a completed restore ($(tr '\n' ' ' <"$DATA_DIR/$COMPLETE")): nothing to do"
        return 0
    fi
    if [[ -f "$DATA_DIR/$PREPARED" ]]; then
        log "a restore was prepared but its replay never finished: restoring anew"
        write_marker "$DATA_DIR/$IN_PROGRESS" "restarted=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        rm -f -- "$DATA_DIR/$PREPARED"
    elif [[ ! -f "$DATA_DIR/$IN_PROGRESS" && -n "$(ls -A "$DATA_DIR")" ]]; then
        die "mysql.restore is set but $DATA_DIR already holds data that no restore of ours" \
            "wrote: a restore only ever fills a new cluster's empty data dir, so nothing was" \
            "touched. Restore into a new cluster (or a new PVC), or unset mysql.restore to" \
            "keep this data"
    fi
    export RESTORE_WORK_DIR=${RESTORE_WORK_DIR:-${TMPDIR:-/tmp}/mysql-cluster-restore}
    log "restoring backup ${RESTORE_BACKUP:-latest} up to ${RESTORE_POINT:-the backup itself}"
    bash "$CONFIG_DIR/restore.sh" fetch

    local private="$RESTORE_WORK_DIR/server" reached
    trap 'private_server_stop || true' EXIT
    private_server_start "$private" "$DATA_DIR" \
        ${MARIADBD_DEFAULTS_FILE:+"--defaults-file=$MARIADBD_DEFAULTS_FILE"}
    reached=$(MYSQL_SOCKET=$private_server_socket bash "$CONFIG_DIR/restore.sh" apply | tail -n 1)
    private_server_stop
    trap - EXIT
    rm -rf -- "$RESTORE_WORK_DIR"
    log "restored at GTID '$reached'; the server starts on it, the replicas clone from it"
}

main "$@"
