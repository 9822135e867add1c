#!/usr/bin/env bash
# backup.sh: one physical backup of the local server, streamed into the object store.
#
#   mariadb-backup --stream=xbstream | compress | mysqlbackup upload-data   (multipart, sha256)
#   then, only if every stage of that pipeline exited 0: mysqlbackup write-manifest
#
# The manifest is written last and only after a clean pipeline: pipefail makes a failed or
# killed backup tool fail the script even though the uploader saw a normal end of input, so a
# truncated stream never gets a manifest and is never restored or counted by retention
# (mysqlbackup/catalog.py). The uploader completes its multipart upload only at end of input
# and aborts it on any error, so a killed upload leaves no object at all.
#
# Runs beside the server (it needs DATA_DIR and the server's socket), as the backup account;
# the caller holds the cluster's operation lock (distlock run ... -- bash backup.sh), so
# backups, switchovers and ReplicationInit never overlap. Credentials: the backup password
# through read_secret into a 0600 option file in RUN_DIR; the store's keys are files that
# S3_ACCESS_KEY_FILE / S3_SECRET_KEY_FILE name, read by mysqlbackup itself. Neither is ever in
# argv or the environment.
#
# Environment (besides CONTRACT.md's): S3_ENDPOINT, S3_BUCKET, S3_PREFIX, S3_REGION,
# S3_PATH_STYLE, S3_ACCESS_KEY_FILE, S3_SECRET_KEY_FILE; BACKUP_COMPRESSION (gzip|zstd|none,
# default gzip); BACKUP_ID (default: time-based); BACKUP_SLOT and BACKUP_FENCING_TOKEN (a
# scheduled backup, backup-agent.sh: recorded in the manifest, which is refused when the slot
# has a complete backup already or a newer lock holder wrote one). Prints the manifest summary
# on stdout.
set -euo pipefail
SCRIPT_NAME="backup"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

main() {
    require_flavor
    require_vars DATA_DIR RUN_DIR BACKUP_USER S3_ENDPOINT S3_BUCKET S3_ACCESS_KEY_FILE \
        S3_SECRET_KEY_FILE
    require_mariadb "object-store backups support"
    local compression=${BACKUP_COMPRESSION:-gzip}
    local -a compress mysqlbackup
    compress_command compress "$compression"
    mysqlbackup_command mysqlbackup
    read_secret BACKUP_PASSWORD

    local work options id started version server_id
    work=$(mktemp -d "${TMPDIR:-/tmp}/mysql-cluster-backup.XXXXXX")
    options="$RUN_DIR/backup-store-client.cnf"
    # shellcheck disable=SC2064
    trap "rm -rf -- $(printf '%q' "$work") $(printf '%q' "$options")" EXIT
    write_client_options "$options" "$BACKUP_USER" "$BACKUP_PASSWORD" socket "$(server_socket)"
    "${mysqlbackup[@]}" check

    read -r version server_id < <(run_sql "$options" <<<'SELECT VERSION(), @@server_id')
    [[ -n "${server_id:-}" ]] || die "could not read the server's version and server_id"
    id=${BACKUP_ID:-$(date -u +%Y%m%dT%H%M%SZ)-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')}
    [[ "$id" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "BACKUP_ID '$id' is not a valid backup id"
    # Microseconds, like the ended_at Python writes: two backups serialized by the lock can
    # start and end within one second, and their manifests must still order them.
    started=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)

    local -a backup
    backup_stream_command backup "$options" "$work/scratch" no
    # --extra-lsndir keeps a copy of the tool's own metadata (xtrabackup_info: the GTID
    # position at the backup's consistency point) outside the stream, for the manifest.
    backup+=(--extra-lsndir="$work/meta")
    mkdir -p "$work/scratch" "$work/meta"
    log "backup $id of $(hostname) (server_id $server_id, $version) to $S3_BUCKET, $compression"
    "${backup[@]}" 2>"$work/backup.log" | "${compress[@]}" \
        | "${mysqlbackup[@]}" upload-data --id "$id" --compression "$compression" \
            >"$work/upload.json" \
        || die "backup $id failed; no manifest written (backup tool: $(tail -n 3 "$work/backup.log" | tr '\n' ' '))"
    local info
    info=$(backup_meta_file "$work/meta" info) || die "the backup tool wrote no info file"
    "${mysqlbackup[@]}" write-manifest --id "$id" --flavor "$MYSQL_FLAVOR" \
        --server-version "$version" --info "$info" --upload "$work/upload.json" \
        --compression "$compression" --started-at "$started" --host "$(hostname)" \
        --server-id "$server_id" ${BACKUP_SLOT:+--slot "$BACKUP_SLOT"} \
        ${BACKUP_FENCING_TOKEN:+--fencing-token "$BACKUP_FENCING_TOKEN"}
    log "backup $id complete"
}

main "$@"
