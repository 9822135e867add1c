#!/usr/bin/env bash
# clone.sh: init container `clone` (see CONTRACT.md). Replicas only.
#
# A replica's data dir is seeded from a physical backup streamed by a peer's backup sidecar.
# The dangerous case is a clone that stopped half-way (donor killed, stream truncated, prepare
# failed): the old design took any data dir with a mysql/ directory as valid. Here the data dir
# says what it holds through marker files written atomically:
#   .clone-in-progress  written before the first byte arrives; removed only after completion
#   .clone-complete     written after extract + prepare + verification, never before
# so a half-finished clone is recognised on the next start, wiped (the only thing ever wiped) and
# retried, and a data dir holding anything else is refused and left untouched.
#
# Who clones: every pod but the one holding the cluster's data, the primary record's authority
# (lib.sh; ordinal 0 before any record). A data dir the image initialised for the first primary
# (.bootstrap-complete, written by bootstrap-users.sh), or restored into it at deploy
# (.restore-complete, restore-init.sh), is that server's own: kept, like a completed clone, when
# the primary has moved away from it.
#
# Donor choice: the previous ordinal first, as in the original design. Under OrderedReady it is
# the newest pod that is already Ready, and it keeps the backup load off the primary. If it cannot
# be reached (no byte received), lower ordinals down to 0 are tried in turn, then the recorded
# primary if its ordinal is higher, so one unavailable replica does not block seeding. A stream that breaks after data arrived is not
# retried here: the pod fails, and its next start wipes and starts over.
#
# With mysql.tls (TLS_DIR set) the stream comes over TLS, the donor verified against the Secret's
# CA and by its pod name (lib.sh, transport); a donor that cannot prove itself sends nothing, which
# counts as unreachable: the next donor is tried.
#
# mbstream/xbstream can exit 0 on a stream cut at a chunk boundary, so completeness is checked
# on the files the backup tool writes last, and --prepare must succeed before anything is marked.
set -euo pipefail
SCRIPT_NAME=clone
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

# empty | in-progress | complete | foreign
# A temp file of either clone marker without .clone-complete is in-progress: only this script
# writes them, the in-progress one into an empty data dir and the complete one while the
# in-progress marker exists, and a kill between write_marker's mktemp and its rename can leave
# one alone in the data dir (issue 16 item 4: refused as foreign before).
data_dir_state() {
    if [[ -f "$DATA_DIR/$CLONE_COMPLETE_MARKER" ]]; then
        echo complete
    elif holds_first_primary_data "$DATA_DIR"; then
        echo bootstrapped
    elif [[ -f "$DATA_DIR/$CLONE_IN_PROGRESS_MARKER" || -n "$(marker_temps "$DATA_DIR" \
        "$CLONE_IN_PROGRESS_MARKER" "$CLONE_COMPLETE_MARKER")" ]]; then
        echo in-progress
    elif [[ -z "$(find "$DATA_DIR" -mindepth 1 -maxdepth 1 ! -name lost+found -print -quit)" ]]
    then
        echo empty
    else
        echo foreign
    fi
}

# Everything but the in-progress marker (marker temp files too), so a crash during the wipe
# still reads as in-progress.
wipe_partial_clone() {
    find "${DATA_DIR:?}" -mindepth 1 -maxdepth 1 ! -name "$CLONE_IN_PROGRESS_MARKER" \
        ! -name lost+found -exec rm -rf -- {} +
}

received_anything() {
    [[ -n "$(find "$DATA_DIR" -mindepth 1 -maxdepth 1 ! -name "$CLONE_IN_PROGRESS_MARKER" \
        ! -name lost+found -print -quit)" ]]
}

# The files the backup tool streams last; a stream cut before them is incomplete.
verify_stream_complete() {
    local kind
    for kind in checkpoints info; do
        backup_meta_file "$DATA_DIR" "$kind" >/dev/null \
            || die "stream incomplete: no ${kind} file from the backup tool (donor died or stream cut)"
    done
    [[ -f "$DATA_DIR/backup-my.cnf" ]] || die "stream incomplete: no backup-my.cnf"
    backup_meta_file "$DATA_DIR" binlog_info >/dev/null || die "stream incomplete: no binlog info"
}

verify_prepared() {
    local checkpoints expected
    checkpoints=$(backup_meta_file "$DATA_DIR" checkpoints)
    expected=$(prepared_backup_type)
    grep -Eq "^backup_type[[:space:]]*=[[:space:]]*${expected}[[:space:]]*$" "$checkpoints" \
        || die "prepare did not finish: $checkpoints does not say backup_type = $expected"
    [[ -d "$DATA_DIR/mysql" ]] || die "prepared clone has no mysql/ system schema"
}

# stream_from DONOR_ORDINAL: 0 on a complete stream, 2 when the donor sent nothing, 1 otherwise.
stream_from() {
    local donor=$1 host port
    host=$(peer_host "$donor")
    port=$(peer_port "$BACKUP_PORT" "$donor")
    local -a receive extract
    receive_command receive "$host" "$port"
    extract_command extract "$DATA_DIR"
    log "streaming a backup from ordinal $donor ($host:$port) with ${receive[0]}"
    if "${receive[@]}" | "${extract[@]}"; then
        received_anything && return 0
        log "ordinal $donor sent an empty stream"
        return 2
    fi
    if received_anything; then
        log "stream from ordinal $donor broke after data arrived"
        return 1
    fi
    if [[ -n "${TLS_DIR:-}" ]]; then
        # ncat says no more than "Input/output error" about a certificate it refused.
        log "ordinal $donor could not be reached or sent nothing (TLS: or its certificate is" \
            "not signed by $TLS_DIR/ca.crt or does not name $host)"
    else
        log "ordinal $donor could not be reached or sent nothing"
    fi
    return 2
}

main() {
    require_vars POD_NAME DATA_DIR CONFIG_DIR BACKUP_PORT PEER_HOST_TEMPLATE
    require_flavor
    local ordinal authority
    ordinal=$(pod_ordinal)
    authority=$(recorded_authority)
    if ((ordinal == authority)); then
        log "ordinal $ordinal holds the cluster's data (the primary record's): nothing to clone"
        return 0
    fi
    transport_tool >/dev/null  # fail before touching anything if no transport is installed
    transport_tls_check        # and if TLS is on but the Secret's files cannot verify a donor
    mkdir -p "$DATA_DIR"
    local state
    state=$(data_dir_state)
    case "$state" in
        complete)
            log "data dir holds a completed clone ($(tr '\n' ' ' <"$DATA_DIR/$CLONE_COMPLETE_MARKER")): keeping it"
            # A kill after the complete marker's rename can leave the in-progress marker, and
            # one inside write_marker a temp file: leftovers of a clone that did complete.
            remove_marker_temps "$DATA_DIR" "$CLONE_IN_PROGRESS_MARKER" "$CLONE_COMPLETE_MARKER"
            rm -f -- "$DATA_DIR/$CLONE_IN_PROGRESS_MARKER"
            return 0
            ;;
        bootstrapped)
            log "data dir is the first primary's own (bootstrapped or restored here); the primary moved to" \
                "ordinal $authority, which replicates to it: keeping it"
            return 0
            ;;
        in-progress)
            log "data dir holds a clone that never completed: wiping it and cloning again"
            # Killed inside write_marker, a run leaves only the marker's temp file: the marker
            # itself goes in first, so that a kill during the wipe still reads as in-progress.
            if [[ ! -f "$DATA_DIR/$CLONE_IN_PROGRESS_MARKER" ]]; then
                write_marker "$DATA_DIR/$CLONE_IN_PROGRESS_MARKER" \
                    "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
            fi
            wipe_partial_clone
            ;;
        empty)
            write_marker "$DATA_DIR/$CLONE_IN_PROGRESS_MARKER" "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
            ;;
        foreign)
            die "data dir $DATA_DIR is not empty and holds no clone made by clone.sh" \
                "(no $CLONE_COMPLETE_MARKER or $CLONE_IN_PROGRESS_MARKER); refusing to touch it." \
                "Move its contents away if it is not needed, or restore the marker if it is."
            ;;
    esac

    local donor status=2
    local -a donors=()
    for ((donor = ordinal - 1; donor >= 0; donor--)); do donors+=("$donor"); done
    ((authority < ordinal)) || donors+=("$authority")
    for donor in "${donors[@]}"; do
        status=0
        stream_from "$donor" || status=$?
        ((status == 2)) || break
    done
    ((status == 0)) || die "clone failed (partial data is kept marked in-progress and wiped on the next start)"

    verify_stream_complete
    local -a prepare
    prepare_command prepare "$DATA_DIR"
    log "preparing the backup with ${prepare[0]}"
    "${prepare[@]}" || die "${prepare[0]} --prepare failed"
    verify_prepared
    local gtid
    gtid=$(backup_gtid "$DATA_DIR")
    # The clone's files must be on disk before the marker that vouches for them.
    sync -f "$DATA_DIR"

    write_marker "$DATA_DIR/$CLONE_COMPLETE_MARKER" "donor=$donor" "gtid=$gtid" \
        "completed=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    rm -f "$DATA_DIR/$CLONE_IN_PROGRESS_MARKER"
    log "clone from ordinal $donor complete at GTID '$gtid'"
}

main "$@"
