#!/bin/sh
# Start one etcd member of the StatefulSet. The arguments are etcd's own flags (name,
# URLs, data dir, token, TLS); this script only decides how the member joins:
#
#   data dir has a WAL, listed    -> restart on it (initial-cluster flags are ignored),
#                                    unless listed as a learner that never started: this
#                                    ordinal was removed and added again since, so the old
#                                    data is moved aside and the member joins afresh
#   data dir has a WAL, unlisted  -> our ID was removed. Wanted again (see "desired"
#                                    below): move the data aside and add ourselves back;
#                                    not wanted (a scale-down): wait for the pod's deletion
#   data dir has a WAL, no answer -> restart on it (a whole-cluster restart)
#   empty, no cluster yet         -> bootstrap with the other initial members (state "new")
#   empty, listed, unstarted      -> we were added: join (state "existing")
#   empty, listed, started        -> our data dir was lost: remove our old ID, add ourselves
#                                    back as a learner, join (etcd refuses an old ID without
#                                    its data: "has already been bootstrapped" or a raft panic)
#   empty, unlisted, desired      -> add ourselves as a learner once etcd's single learner
#                                    slot is free, then join
#   empty, unlisted, not desired  -> wait: nobody asked for this member
#
# "Desired" is the peer-URL list EtcdMembership keeps in etcd under MEMBER_DESIRED_KEY:
# it checks every change (quorum, one member at a time) and adds the first new member of
# a scale-up itself; the pods of the further new members add themselves here, one learner
# at a time, because their member cannot catch up before their pod exists. Without that
# key (membership.enabled=false, or no membership change yet) only a member that removed
# its own lost ID re-adds itself (a marker on its volume says so).
#
# etcd admits one learner at a time. A learner that is not desired, or whose pod has not
# started (or stopped answering) for MEMBER_STALE_LEARNER_SECONDS, is removed by whoever
# waits for the slot: a learner has no vote, so removing it never costs quorum, and its
# pod (if it ever runs) adds itself back. One that answers is catching up: it is waited
# for, or two slow learners would take the slot from each other forever. A learner promotes itself
# once etcd says it has caught up; until then etcd keeps it out of quorum.
#
# With etcd.restore.snapshot, three init containers run this script before etcd starts
# (modes, first argument; components/etcd/_snapshots.py wires them):
#
#   restore-plan   (etcd image)  decides whether this member restores: only an initial member
#                                whose data dir is empty and that never restored before
#                                (marker RESTORE_DONE), while the restored cluster is still
#                                forming (no member answers, or this one is listed as an
#                                unstarted voter). A member that ran before and lost its data
#                                dir, or one added later, is left to the joining rules above:
#                                it gets the data from the leader, never a second restore.
#                                Leftovers of a half-finished restore are removed first.
#   restore-fetch  (agent image) the planned snapshot from the store, verified
#                                (python -m mysqlbackup fetch-snapshot), beside the data dir
#   restore        (etcd image)  etcdutl snapshot restore with exactly the name, cluster,
#                                token and peer URL etcd starts with below, into a directory
#                                beside the data dir, renamed into place (so a data dir is
#                                either absent or complete), then the marker
#
# Runs under busybox sh in the pod (the etcd image is distroless), under the agent image's
# /bin/sh (restore-fetch) and under any POSIX sh in tests. Environment (set by
# components/etcd/cluster.py):
#   MEMBER_NAME               this member's name (the pod name)
#   MEMBER_PEER_URL           this member's advertised peer URL
#   MEMBER_DATA_DIR           etcd's --data-dir
#   MEMBER_BOOTSTRAP_CLUSTER  --initial-cluster of the first deployment (name=url,...)
#   MEMBER_CLUSTER_ENDPOINTS  client URLs to find the running cluster (comma-separated)
#   MEMBER_DESIRED_KEY        the etcd key holding the desired peer URLs (comma-separated)
#   MEMBER_STALE_LEARNER_SECONDS  how long a never-started learner may hold the slot
#   MEMBER_BUSYBOX            the busybox binary, whose applets are linked beside it
#   MEMBER_CLUSTER_TOKEN      --initial-cluster-token (restore)
#   RESTORE_SNAPSHOT          the snapshot id, or latest (restore modes)
#   RESTORE_DIR               the restore's work dir, on the data volume (restore modes)
#   RESTORE_DONE              the marker a completed restore leaves (restore modes)
#   MYSQLBACKUP_PYTHON, S3_*  the agent image's Python and the store (restore-fetch)
#   MEMBER_ETCD, MEMBER_ETCDCTL, MEMBER_ETCDUTL, MEMBER_RETRY_SECONDS  overrides (tests)
#   ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY          client TLS, read by etcdctl
set -eu

# The only shell in the pod is a busybox binary an init container copied in, with its
# applets (awk, sleep, date, nc...) linked next to it: put them on PATH.
if [ -n "${MEMBER_BUSYBOX:-}" ]; then
    PATH="${MEMBER_BUSYBOX%/*}:$PATH"
    export PATH
fi

# "etcd-member.sh readiness HOST PORT": the readiness probe (an exec probe, so it runs
# with this container's environment) against the plain-HTTP metrics listener (no client
# certificate needed). /health alone is not enough: a learner answers it with
# {"health":"true"} (etcd 3.4 and 3.5), so a StatefulSet whose last new member is still a
# non-voting learner would look rolled out. /readyz only checks for learners from etcd
# 3.5.19 (etcd PR #19280; 3.4 never), so the check reads etcd_server_is_learner, a metric
# both versions export. HTTP/1.0 over busybox nc: nc is in every busybox build, and
# Debian's static busybox wget crashes (so the tests could not run it).
http_get() {
    printf 'GET %s HTTP/1.0\r\n\r\n' "$3" | nc -w 4 "$1" "$2"
}

if [ "${1:-}" = "readiness" ]; then
    host=${2:?usage: etcd-member.sh readiness HOST PORT}
    port=${3:?usage: etcd-member.sh readiness HOST PORT}
    health=$(http_get "$host" "$port" /health 2>&1) || true
    case "$health" in
        "HTTP/1."?" 200 "*'"health":"true"'*) ;;
        *) echo "not ready: /health on $host:$port answered: ${health:-nothing}" >&2; exit 1 ;;
    esac
    metrics=$(http_get "$host" "$port" /metrics 2>&1) || true
    case "$metrics" in
        *"etcd_server_is_learner 0"*) exit 0 ;;
        *"etcd_server_is_learner 1"*)
            echo "not ready: this member is a learner (not yet a voting member)" >&2
            exit 1 ;;
        *) echo "not ready: /metrics on $host:$port has no etcd_server_is_learner" >&2; exit 1 ;;
    esac
fi

# "etcd-member.sh restore-fetch": in the agent image, which has Python but no etcdctl, so
# only what restore-plan decided: the snapshot, verified against its manifest's sha256
# (fetch-snapshot writes a .partial file and renames it only once the sum matched).
if [ "${1:-}" = "restore-fetch" ]; then
    : "${RESTORE_DIR:?RESTORE_DIR is required}"
    : "${RESTORE_SNAPSHOT:?RESTORE_SNAPSHOT is required (a snapshot id or latest)}"
    if [ ! -e "$RESTORE_DIR/planned" ]; then
        echo "etcd-member restore-fetch: no restore planned for this member" >&2
        exit 0
    fi
    rm -f "$RESTORE_DIR/snapshot.db" "$RESTORE_DIR/snapshot.db.partial"
    "${MYSQLBACKUP_PYTHON:-python3}" -m mysqlbackup fetch-snapshot --id "$RESTORE_SNAPSHOT" \
        --out "$RESTORE_DIR/snapshot.db" >"$RESTORE_DIR/snapshot.json"
    echo "etcd-member restore-fetch: fetched $(cat "$RESTORE_DIR/snapshot.json")" >&2
    exit 0
fi

: "${MEMBER_NAME:?MEMBER_NAME is required (the pod name)}"
: "${MEMBER_PEER_URL:?MEMBER_PEER_URL is required}"
: "${MEMBER_DATA_DIR:?MEMBER_DATA_DIR is required}"
: "${MEMBER_BOOTSTRAP_CLUSTER:?MEMBER_BOOTSTRAP_CLUSTER is required}"
: "${MEMBER_CLUSTER_ENDPOINTS:?MEMBER_CLUSTER_ENDPOINTS is required}"
: "${MEMBER_DESIRED_KEY:?MEMBER_DESIRED_KEY is required}"
ETCD=${MEMBER_ETCD:-/usr/local/bin/etcd}
ETCDCTL=${MEMBER_ETCDCTL:-/usr/local/bin/etcdctl}
RETRY_SECONDS=${MEMBER_RETRY_SECONDS:-2}
STALE_SECONDS=${MEMBER_STALE_LEARNER_SECONDS:-120}
case "$STALE_SECONDS" in
    '' | *[!0-9]*) echo "MEMBER_STALE_LEARNER_SECONDS must be a whole number" >&2; exit 2 ;;
esac

log() {
    printf '%s etcd-member %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$MEMBER_NAME" "$*" >&2
}

# A waiting loop says what it waits for once, not every few seconds.
last_note=""
note() {
    if [ "$*" != "$last_note" ]; then
        last_note=$*
        log "$*"
    fi
}

ctl_within() {
    timeout=$1
    shift
    "$ETCDCTL" --endpoints="$MEMBER_CLUSTER_ENDPOINTS" --dial-timeout=3s \
        --command-timeout="$timeout" "$@"
}

ctl() {
    ctl_within 10s "$@"
}

# "member list -w simple" lines: "id, status, name, peer-urls, client-urls, is-learner".
# Any member answers it from its own store, in milliseconds; etcdctl retries unreachable
# endpoints until the command timeout, so this bounds how long a first bootstrap (when no
# cluster can answer) waits before it starts etcd.
member_list() {
    ctl_within 3s member list -w simple 2>/dev/null
}

# "id status is-learner" of the member that has our peer URL; empty if not listed.
own_entry() {
    printf '%s\n' "$1" | awk -F', ' -v url="$MEMBER_PEER_URL" '
        NF >= 6 { n = split($4, urls, ","); for (i = 1; i <= n; i++) if (urls[i] == url) print $1, $2, $6 }'
}

# --initial-cluster for joining: every listed member, us under our own name. etcd only
# compares the peer URLs of the others, so an unstarted member gets a placeholder name.
cluster_from_list() {
    printf '%s\n' "$1" | awk -F', ' -v me="$MEMBER_NAME" -v url="$MEMBER_PEER_URL" '
        NF >= 6 {
            n = split($4, urls, ","); name = $3
            for (i = 1; i <= n; i++) if (urls[i] == url) name = me
            if (name == "") name = "unstarted-" $1
            for (i = 1; i <= n; i++) { out = out sep name "=" urls[i]; sep = "," }
        }
        END { print out }'
}

in_bootstrap_cluster() {
    case ",$MEMBER_BOOTSTRAP_CLUSTER," in
        *",$MEMBER_NAME=$MEMBER_PEER_URL,"*) return 0 ;;
        *) return 1 ;;
    esac
}

# Set between removing our lost ID and adding ourselves back, on the data volume, so a
# restart in between still re-adds (when no desired list says whether we are wanted).
readd_marker="$MEMBER_DATA_DIR.re-adding"

# Reads the desired peer URLs into $desired ("" when EtcdMembership never wrote them).
# Fails when etcd does not answer: then nobody can tell whether we are wanted.
read_desired() {
    desired=$(ctl get --print-value-only "$MEMBER_DESIRED_KEY" 2>/dev/null) || return 1
    # A cluster restored from a snapshot holds the list of the snapshot's source. Ours
    # always names bootstrap member 0 (scale-down removes the highest ordinals first);
    # one that does not is another cluster's, and says nothing about this one.
    first=${MEMBER_BOOTSTRAP_CLUSTER%%,*}
    if [ -n "$desired" ] && ! is_desired "${first#*=}"; then
        note "ignoring $MEMBER_DESIRED_KEY: it lists another cluster's members ($desired), restored from a snapshot; EtcdMembership's next update rewrites it"
        desired=""
    fi
}

is_desired() {
    case ",$desired," in
        *",$1,"*) return 0 ;;
        *) return 1 ;;
    esac
}

# Whether this member should be added back: listed in the desired peer URLs, or, with no
# such list, after it removed its own lost ID.
wanted() {
    read_desired || return 1
    if [ -n "$desired" ]; then
        is_desired "$MEMBER_PEER_URL"
    else
        [ -e "$readd_marker" ]
    fi
}

# Add ourselves as a learner once etcd's single learner slot is free. Returns 0 once
# added. A learner in the way is removed (no vote, no data: quorum is unaffected) when
# nobody wants it, or when for STALE_SECONDS of our waiting it has not started (its pod
# never came up) or has not answered (its pod is gone); one that answers is catching up
# and is waited for, however long that takes.
waited_for=""
waited_since=0
add_self_as_learner() {
    blocker=$(printf '%s\n' "$1" | awk -F', ' -v url="$MEMBER_PEER_URL" '
        NF >= 6 && $6 == "true" && $4 != url { print $1, $2, $4, ($5 == "" ? "-" : $5); exit }')
    if [ -z "$blocker" ]; then
        # etcd refuses a second learner ("too many learner members"): a racing pod that
        # took the slot first makes this fail, and the next round waits for it.
        if ctl member add "$MEMBER_NAME" --peer-urls="$MEMBER_PEER_URL" --learner >/dev/null 2>&1; then
            log "added this member as a learner ($MEMBER_PEER_URL)"
            rm -f "$readd_marker"
            return 0
        fi
        note "adding this member as a learner failed; retrying"
        return 1
    fi
    # id, status, peer URLs, client URLs ("-" until it started): no field has a space.
    # shellcheck disable=SC2086
    set -- $blocker
    blocker_id=$1
    blocker_urls=$3
    blocker_clients=$4
    if [ -n "$desired" ] && ! is_desired "$blocker_urls"; then
        log "removing learner $blocker_urls ($blocker_id): it holds etcd's single learner slot but is not a desired member"
        ctl member remove "$blocker_id" >&2 || true
        return 1
    fi
    if [ "$2" = "unstarted" ]; then
        problem="was added but has not started"
    elif ! "$ETCDCTL" --endpoints="$blocker_clients" --dial-timeout=2s --command-timeout=3s \
            endpoint status >/dev/null 2>&1; then
        problem="has started before but does not answer"
    else
        waited_for=""
        note "waiting for etcd's single learner slot: learner $blocker_urls ($blocker_id) is catching up"
        return 1
    fi
    now=$(date +%s)
    if [ "$blocker_id" != "$waited_for" ]; then
        waited_for=$blocker_id
        waited_since=$now
    fi
    if [ $((now - waited_since)) -ge "$STALE_SECONDS" ]; then
        log "learner $blocker_urls ($blocker_id) $problem for ${STALE_SECONDS}s: removing it so that this member can join; its pod adds it back when it runs"
        ctl member remove "$blocker_id" >&2 || true
        waited_for=""
        return 1
    fi
    note "waiting for etcd's single learner slot: learner $blocker_urls ($blocker_id) $problem; it is removed if that lasts ${STALE_SECONDS}s"
    return 1
}

# Keep data that belongs to a removed ID aside (nothing is deleted) and join afresh.
move_data_aside() {
    aside="$MEMBER_DATA_DIR.removed-$(date -u +%Y%m%dT%H%M%SZ)"
    log "$1: moving the data dir to $aside"
    mv "$MEMBER_DATA_DIR" "$aside"
}

# Run etcd with the given flags. A voter simply becomes etcd (exec); a learner keeps this
# shell as a parent that promotes it once caught up and forwards SIGTERM.
run_etcd() {
    member_id=$1
    learner=$2
    shift 2
    if [ "$learner" != "true" ]; then
        exec "$ETCD" "$@"
    fi
    "$ETCD" "$@" &
    pid=$!
    trap 'kill -TERM "$pid" 2>/dev/null || true' TERM INT
    while kill -0 "$pid" 2>/dev/null; do
        # etcd refuses the promotion until the learner's log is close to the leader's.
        if ctl member promote "$member_id" >/dev/null 2>&1; then
            log "promoted from learner to voting member ($member_id)"
            break
        fi
        entry=$(own_entry "$(member_list || true)")
        case "$entry" in
            *" false") log "already a voting member"; break ;;
        esac
        sleep "$RETRY_SECONDS"
    done
    status=0
    while kill -0 "$pid" 2>/dev/null; do
        if wait "$pid"; then status=0; else status=$?; fi
    done
    exit "$status"
}

restore_log() {
    printf '%s etcd-member %s: restore: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        "$MEMBER_NAME" "$*" >&2
}

# Whether this member restores the snapshot (RESTORE_DIR/planned), and nothing else: the
# data dir is never touched here.
restore_plan() {
    if [ -e "$RESTORE_DONE" ]; then
        restore_log "restored before ($(cat "$RESTORE_DONE")): nothing to do"
        rm -rf "$RESTORE_DIR"
        return 0
    fi
    if [ -e "$MEMBER_DATA_DIR/member" ]; then
        if [ -e "$RESTORE_DIR/planned" ] && [ -e "$RESTORE_DIR/snapshot.json" ] \
                && [ ! -e "$RESTORE_DIR/data" ]; then
            # Renamed into place, then stopped before the marker: the data is complete.
            restore_mark_done
        else
            restore_log "the data dir holds data: a restore never overwrites it"
        fi
        rm -rf "$RESTORE_DIR"
        return 0
    fi
    if [ -e "$RESTORE_DIR" ]; then
        restore_log "removing a half-finished restore's leftovers ($RESTORE_DIR) to redo it"
        rm -rf "$RESTORE_DIR"
    fi
    if ! in_bootstrap_cluster; then
        restore_log "not an initial member: it joins the restored cluster instead"
        return 0
    fi
    forming="no member answers yet"
    if list=$(member_list) && [ -n "$list" ]; then
        entry=$(own_entry "$list")
        case "$entry" in
            *" unstarted false") forming="the restored members list this one as not started yet" ;;
            *)
                restore_log "the restored cluster runs and this member is ${entry:+listed as $entry}${entry:-not listed}: it joins (etcd-member.sh), no second restore"
                return 0 ;;
        esac
    fi
    mkdir -p "$RESTORE_DIR"
    : >"$RESTORE_DIR/planned"
    restore_log "planned: snapshot $RESTORE_SNAPSHOT into an empty data dir ($forming)"
}

restore_mark_done() {
    printf 'snapshot=%s restored=%s\n' "$(cat "$RESTORE_DIR/snapshot.json")" \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$RESTORE_DONE.tmp"
    mv "$RESTORE_DONE.tmp" "$RESTORE_DONE"
    restore_log "done: $(cat "$RESTORE_DONE")"
}

restore_snapshot() {
    if [ ! -e "$RESTORE_DIR/planned" ]; then
        return 0
    fi
    if [ ! -s "$RESTORE_DIR/snapshot.db" ]; then
        restore_log "planned, but restore-fetch left no snapshot in $RESTORE_DIR"
        exit 1
    fi
    if [ -e "$MEMBER_DATA_DIR" ] && [ -n "$(ls -A "$MEMBER_DATA_DIR")" ]; then
        restore_log "$MEMBER_DATA_DIR is not empty: refusing to restore over it"
        exit 1
    fi
    rm -rf "$RESTORE_DIR/data"
    # The very name, cluster, token and peer URL etcd is started with (above), so the
    # restored members make one new cluster (etcd derives member and cluster IDs from them).
    "$ETCDUTL" snapshot restore "$RESTORE_DIR/snapshot.db" --data-dir="$RESTORE_DIR/data" \
        --name="$MEMBER_NAME" --initial-cluster="$MEMBER_BOOTSTRAP_CLUSTER" \
        --initial-cluster-token="$MEMBER_CLUSTER_TOKEN" \
        --initial-advertise-peer-urls="$MEMBER_PEER_URL" >&2
    if [ -e "$MEMBER_DATA_DIR" ]; then
        rmdir "$MEMBER_DATA_DIR"
    fi
    mv "$RESTORE_DIR/data" "$MEMBER_DATA_DIR"
    restore_mark_done
    rm -rf "$RESTORE_DIR"
}

case "${1:-}" in
    restore-plan | restore)
        : "${RESTORE_DIR:?RESTORE_DIR is required}"
        : "${RESTORE_DONE:?RESTORE_DONE is required}"
        : "${RESTORE_SNAPSHOT:?RESTORE_SNAPSHOT is required (a snapshot id or latest)}"
        : "${MEMBER_CLUSTER_TOKEN:?MEMBER_CLUSTER_TOKEN is required (--initial-cluster-token)}"
        ETCDUTL=${MEMBER_ETCDUTL:-/usr/local/bin/etcdutl}
        if [ "$1" = "restore-plan" ]; then restore_plan; else restore_snapshot; fi
        exit 0 ;;
esac

if [ -d "$MEMBER_DATA_DIR/member/wal" ]; then
    while :; do
        if ! list=$(member_list) || [ -z "$list" ]; then
            # Nobody answers (every member restarting at once): our data is our membership.
            log "restarting on the existing data dir (no other member answers)"
            run_etcd "" false "$@"
        fi
        entry=$(own_entry "$list")
        case "$entry" in
            *" unstarted true")
                # Only learners: a voter listed as unstarted is an initial member that
                # crashed mid-bootstrap and keeps its data.
                move_data_aside "the data dir belongs to a removed incarnation of this member"
                break
                ;;
            "")
                if wanted; then
                    move_data_aside "this member was removed but is wanted again; its data dir belongs to the removed ID"
                    break
                fi
                note "this member was removed from the cluster and is not a desired member: waiting (a scale-down deletes this pod)"
                sleep "$RETRY_SECONDS"
                ;;
            *)
                log "restarting on the existing data dir"
                run_etcd "${entry%% *}" "${entry##* }" "$@"
                ;;
        esac
    done
fi

# A first start that died before writing its WAL leaves nothing worth keeping.
rm -rf "${MEMBER_DATA_DIR:?}/member"

while :; do
    if list=$(member_list) && [ -n "$list" ]; then
        entry=$(own_entry "$list")
        if [ -z "$entry" ]; then
            if wanted; then
                add_self_as_learner "$list" || sleep "$RETRY_SECONDS"
            else
                note "not a member of the running cluster and not a desired one: waiting for EtcdMembership to add $MEMBER_PEER_URL"
                sleep "$RETRY_SECONDS"
            fi
            continue
        fi
        id=${entry%% *}
        rest=${entry#* }
        status=${rest%% *}
        learner=${rest#* }
        if [ "$status" = "started" ]; then
            log "member $id has started before but the data dir is empty (lost): removing it to re-add it"
            : >"$readd_marker"
            ctl member remove "$id" >&2 || sleep "$RETRY_SECONDS"
            continue
        fi
        # Members are only ever added as learners: an unstarted voter is a peer of the
        # first bootstrap that has not finished starting yet.
        if [ "$learner" = "false" ] && in_bootstrap_cluster; then
            log "the initial cluster is still forming: bootstrapping with it"
            exec "$ETCD" "$@" --initial-cluster-state=new --initial-cluster="$MEMBER_BOOTSTRAP_CLUSTER"
        fi
        rm -f "$readd_marker"
        cluster=$(cluster_from_list "$list")
        log "joining the running cluster as member $id (learner: $learner)"
        run_etcd "$id" "$learner" "$@" --initial-cluster-state=existing --initial-cluster="$cluster"
    fi
    if in_bootstrap_cluster; then
        log "no cluster answers: bootstrapping with the initial members"
        exec "$ETCD" "$@" --initial-cluster-state=new --initial-cluster="$MEMBER_BOOTSTRAP_CLUSTER"
    fi
    log "no cluster answers and this member is not an initial one: waiting"
    sleep "$RETRY_SECONDS"
done
