#!/bin/sh
# Start one etcd member of the StatefulSet. The arguments are etcd's own flags (name,
# URLs, data dir, token, TLS); this script only decides how the member joins:
#
#   data dir has a WAL      -> restart on it (initial-cluster flags are ignored by etcd),
#                              unless this ordinal was removed and re-added since: then
#                              the old data is moved aside and the member joins afresh
#   empty, no cluster yet   -> bootstrap with the other initial members (state "new")
#   empty, listed, unstarted-> EtcdMembership added us: join (state "existing")
#   empty, listed, started  -> our data dir was lost: remove our old ID, add ourselves
#                              back as a learner, join (etcd refuses an old ID without
#                              its data: "has already been bootstrapped" or a raft panic)
#   empty, not listed       -> wait: only EtcdMembership adds members (it checks quorum)
#
# A learner promotes itself once etcd says it has caught up; until then etcd itself
# keeps it out of quorum, so a slow catch-up never costs availability.
#
# Runs under busybox sh in the pod (the etcd image is distroless) and under any POSIX sh
# in tests. Environment (set by components/etcd/cluster.py):
#   MEMBER_NAME               this member's name (the pod name)
#   MEMBER_PEER_URL           this member's advertised peer URL
#   MEMBER_DATA_DIR           etcd's --data-dir
#   MEMBER_BOOTSTRAP_CLUSTER  --initial-cluster of the first deployment (name=url,...)
#   MEMBER_CLUSTER_ENDPOINTS  client URLs to find the running cluster (comma-separated)
#   MEMBER_BUSYBOX            the busybox binary, whose applets are linked beside it
#   MEMBER_ETCD, MEMBER_ETCDCTL, MEMBER_RETRY_SECONDS  overrides (tests)
#   ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY          client TLS, read by etcdctl
set -eu

: "${MEMBER_NAME:?MEMBER_NAME is required (the pod name)}"
: "${MEMBER_PEER_URL:?MEMBER_PEER_URL is required}"
: "${MEMBER_DATA_DIR:?MEMBER_DATA_DIR is required}"
: "${MEMBER_BOOTSTRAP_CLUSTER:?MEMBER_BOOTSTRAP_CLUSTER is required}"
: "${MEMBER_CLUSTER_ENDPOINTS:?MEMBER_CLUSTER_ENDPOINTS is required}"
ETCD=${MEMBER_ETCD:-/usr/local/bin/etcd}
ETCDCTL=${MEMBER_ETCDCTL:-/usr/local/bin/etcdctl}
RETRY_SECONDS=${MEMBER_RETRY_SECONDS:-2}

# The only shell in the pod is a busybox binary an init container copied in, with its
# applets (awk, sleep, date...) linked next to it: put them on PATH.
if [ -n "${MEMBER_BUSYBOX:-}" ]; then
    PATH="${MEMBER_BUSYBOX%/*}:$PATH"
    export PATH
fi

log() {
    printf '%s etcd-member %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$MEMBER_NAME" "$*" >&2
}

ctl() {
    "$ETCDCTL" --endpoints="$MEMBER_CLUSTER_ENDPOINTS" --dial-timeout=3s \
        --command-timeout=10s "$@"
}

# "member list -w simple" lines: "id, status, name, peer-urls, client-urls, is-learner".
member_list() {
    ctl member list -w simple 2>/dev/null
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

if [ -d "$MEMBER_DATA_DIR/member/wal" ]; then
    entry=$(own_entry "$(member_list || true)")
    case "$entry" in
        *" unstarted true")
            # Data, yet listed as a learner that never started: this ordinal was removed
            # (scale-down) and added again, and the volume outlived the removal. That data
            # belongs to the removed ID, which etcd would refuse. Keep it aside (nothing
            # is deleted) and join as the new member. Only learners: a voter listed as
            # unstarted is an initial member that crashed mid-bootstrap and keeps its data.
            aside="$MEMBER_DATA_DIR.removed-$(date -u +%Y%m%dT%H%M%SZ)"
            log "data dir belongs to a removed incarnation of this member: moving it to $aside"
            mv "$MEMBER_DATA_DIR" "$aside"
            ;;
        *)
            log "restarting on the existing data dir"
            run_etcd "${entry%% *}" "${entry##* }" "$@"
            ;;
    esac
fi

# A first start that died before writing its WAL leaves nothing worth keeping.
rm -rf "${MEMBER_DATA_DIR:?}/member"
# Set between removing our lost ID and adding ourselves back, on the data volume, so a
# restart in between still re-adds instead of waiting for EtcdMembership forever.
readd_marker="$MEMBER_DATA_DIR.re-adding"

while :; do
    if list=$(member_list) && [ -n "$list" ]; then
        entry=$(own_entry "$list")
        if [ -z "$entry" ] && [ -e "$readd_marker" ]; then
            if ctl member add "$MEMBER_NAME" --peer-urls="$MEMBER_PEER_URL" --learner >&2; then
                rm -f "$readd_marker"
            else
                log "re-adding as a learner failed (will retry)"
                sleep "$RETRY_SECONDS"
            fi
            continue
        fi
        if [ -z "$entry" ]; then
            log "not a member of the running cluster yet; waiting for EtcdMembership to add $MEMBER_PEER_URL"
            sleep "$RETRY_SECONDS"
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
        # Only EtcdMembership adds members, always as learners: an unstarted voter is a
        # peer of the first bootstrap that has not finished starting yet.
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
