#!/bin/sh
# Save one etcd snapshot to the snapshot volume and keep only the newest SNAPSHOT_RETAIN.
#
# A snapshot is written under a temporary name and renamed only after etcdctl verified
# it, so a failed or interrupted run never leaves a file that looks like a good snapshot
# and never pushes a good one out of the retention window, nor partial files that fill
# the volume run after run.
#
# With etcd.snapshot.store.enabled the CronJob's pod runs this twice: first as an init
# container in the etcd image (the save, as above, recording the file it saved in
# SNAPSHOT_SAVED_RECORD on a volume both containers mount), then as "etcd-snapshot.sh
# upload" in the backup agent image (the etcd image has no Python), which uploads exactly
# that file with `python -m mysqlbackup upload-snapshot`: the snapshot, then its manifest,
# so a snapshot without a manifest is incomplete and never restored. The snapshot's id in
# the store is its file name's stamp and sequence, so the PVC's file and the store's object
# name each other; a retried upload of the same file writes the same objects again.
set -eu

if [ "${1:-}" = "upload" ]; then
    : "${SNAPSHOT_SAVED_RECORD:?SNAPSHOT_SAVED_RECORD is required (the file the save names)}"
    : "${SNAPSHOT_SOURCE:?SNAPSHOT_SOURCE is required (the cluster, for the manifest)}"
    : "${SNAPSHOT_RETAIN:?SNAPSHOT_RETAIN is required (complete snapshots kept in the store)}"
    saved=$(cat "$SNAPSHOT_SAVED_RECORD")
    if [ ! -s "$saved" ]; then
        echo "etcd-snapshot upload: $SNAPSHOT_SAVED_RECORD names $saved, which is missing or empty" >&2
        exit 1
    fi
    name=${saved##*/}
    snapshot_id=${name#etcd-}
    snapshot_id=${snapshot_id%.db}
    # The store keeps as many complete snapshots as the volume (SNAPSHOT_RETAIN).
    exec "${MYSQLBACKUP_PYTHON:-python3}" -m mysqlbackup upload-snapshot --file "$saved" \
        --id "$snapshot_id" --source "$SNAPSHOT_SOURCE" --keep "$SNAPSHOT_RETAIN"
fi

: "${SNAPSHOT_ENDPOINT:?SNAPSHOT_ENDPOINT is required (one client URL)}"
: "${SNAPSHOT_DIR:?SNAPSHOT_DIR is required}"
: "${SNAPSHOT_RETAIN:?SNAPSHOT_RETAIN is required}"
ETCDCTL=${SNAPSHOT_ETCDCTL:-/usr/local/bin/etcdctl}

if [ -n "${SNAPSHOT_BUSYBOX:-}" ]; then
    PATH="${SNAPSHOT_BUSYBOX%/*}:$PATH"
    export PATH
fi

case "$SNAPSHOT_RETAIN" in
    '' | *[!0-9]* | 0) echo "SNAPSHOT_RETAIN must be a positive whole number" >&2; exit 2 ;;
esac

# etcd-<UTC time>-<sequence>.db: fixed width, so names sort by age; the sequence keeps two
# runs within one second (a manual run next to the scheduled one) from overwriting.
stamp=$(date -u +%Y%m%dT%H%M%SZ)
sequence=10
while [ -e "$SNAPSHOT_DIR/etcd-$stamp-$sequence.db" ]; do
    sequence=$((sequence + 1))
done
final="$SNAPSHOT_DIR/etcd-$stamp-$sequence.db"
# etcdctl writes "$partial.part" and renames it to "$partial" once the hash checks out.
partial="$SNAPSHOT_DIR/.etcd-$stamp-$sequence.db.partial"
saver=""
# A failed or stopped run removes its partial files. A stopped one is stopped by a signal: the
# kubelet's SIGTERM (to PID 1, which ignores a signal it has no handler for) is trapped, and
# ends etcdctl too, so the run ends within the grace period, not after the command timeout.
trap 'rm -f "$partial" "$partial.part"' EXIT
trap 'stop 129' HUP
trap 'stop 130' INT
trap 'stop 143' TERM
stop() {
    if [ -n "$saver" ]; then
        kill "$saver" 2>/dev/null || true
        wait "$saver" 2>/dev/null || true
    fi
    exit "$1"
}

# A SIGKILLed run (the Job's deadline) cannot clean up: its partial files are removed by a
# later run once they are older than any run lasts (the 300 s command timeout), so those of a
# manual run beside this one are left alone.
find "$SNAPSHOT_DIR" -maxdepth 1 -type f -name '.etcd-*.db.partial*' -mmin +10 \
    -exec rm -f {} +

# etcdctl snapshot save needs exactly one endpoint and checks the file's hash itself. In the
# background so that a trapped signal is handled at once (a shell runs traps only between
# commands, and `wait` is interrupted by one).
"$ETCDCTL" --endpoints="$SNAPSHOT_ENDPOINT" --command-timeout=300s snapshot save "$partial" &
saver=$!
wait "$saver"
saver=""
mv "$partial" "$final"
echo "saved $final"
if [ -n "${SNAPSHOT_SAVED_RECORD:-}" ]; then
    printf '%s\n' "$final" >"$SNAPSHOT_SAVED_RECORD"
fi

# Names are fixed-width UTC timestamps, so the glob lists them oldest first.
total=0
for snapshot in "$SNAPSHOT_DIR"/etcd-*.db; do
    [ -e "$snapshot" ] && total=$((total + 1))
done
excess=$((total - SNAPSHOT_RETAIN))
for snapshot in "$SNAPSHOT_DIR"/etcd-*.db; do
    [ "$excess" -gt 0 ] || break
    rm -f "$snapshot"
    echo "deleted $snapshot (keeping the newest $SNAPSHOT_RETAIN)"
    excess=$((excess - 1))
done
