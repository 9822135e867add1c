#!/usr/bin/env bash
# init-config.sh: init container `init-config` (see CONTRACT.md).
#
# The pod's server-id comes from its StatefulSet ordinal, never from randomness: random ids
# collide, and a stable id per ordinal keeps binary logs and GTIDs attributable across restarts.
# Its role comes from the primary record (lib.sh, recorded_role): the primary moves, so a pod
# that restarts follows the record, not its ordinal. Both roles' server configs start the server
# read-only; only ReplicationInit, holding the record's epoch, makes the primary writable. The
# result goes to CONF_DIR, an emptyDir the server reads as its conf.d, so a fresh pod always gets
# fresh config.
#
# The role labels the Services select on are written here too, as a merge patch in
# ROLE_LABELS_FILE that the `label` init container (the distroless kubectl image, no shell)
# applies to its own pod: primary or replica, and the record's epoch they were derived from.
set -euo pipefail
SCRIPT_NAME=init-config
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

main() {
    require_vars POD_NAME SERVER_ID_BASE CONF_DIR CONFIG_DIR MYSQL_PORT ROLE_LABEL EPOCH_LABEL \
        ROLE_LABELS_FILE
    require_uint SERVER_ID_BASE "$SERVER_ID_BASE"
    ((SERVER_ID_BASE >= 1000 && SERVER_ID_BASE % 1000 == 0)) \
        || die "SERVER_ID_BASE must be a multiple of 1000 and at least 1000, got $SERVER_ID_BASE"
    local ordinal server_id role epoch
    ordinal=$(pod_ordinal)
    # Each cluster owns the block [base, base + 999]; server_id is a 32-bit unsigned integer.
    ((ordinal < 1000)) || die "ordinal $ordinal does not fit the server-id block of 1000"
    server_id=$((SERVER_ID_BASE + ordinal))
    ((server_id <= 4294967295)) || die "server-id $server_id exceeds 4294967295"
    role=$(recorded_role "$ordinal")
    epoch=$(recorded_epoch)
    [[ -f "$CONFIG_DIR/$role.cnf" ]] || die "$CONFIG_DIR/$role.cnf is missing from the ConfigMap"

    local report_host report_port
    report_host=$(peer_host "$ordinal")
    report_port=$(peer_port "$MYSQL_PORT" "$ordinal")
    mkdir -p "$CONF_DIR"
    local tmp
    tmp=$(mktemp "$CONF_DIR/.server-id.XXXXXX")
    {
        printf '# Written by init-config.sh for %s (ordinal %d, %s).\n' "$POD_NAME" "$ordinal" "$role"
        printf '[mysqld]\n'
        printf 'server_id = %d\n' "$server_id"
        # What SHOW REPLICAS on the primary lists for this pod.
        printf 'report_host = %s\n' "$report_host"
        printf 'report_port = %d\n' "$report_port"
    } >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$CONF_DIR/server-id.cnf"

    tmp=$(mktemp "$CONF_DIR/.role.XXXXXX")
    cp "$CONFIG_DIR/$role.cnf" "$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$CONF_DIR/$role.cnf"
    # The role of an ordinal moves with the primary: never leave both files for the server to merge.
    rm -f "$CONF_DIR/$([[ $role == primary ]] && echo replica || echo primary).cnf"

    # Label keys and values are fixed strings and digits: nothing here needs JSON escaping.
    tmp=$(mktemp "$ROLE_LABELS_FILE.XXXXXX")
    printf '{"metadata":{"labels":{"%s":"%s","%s":"%d"}}}\n' \
        "$ROLE_LABEL" "$role" "$EPOCH_LABEL" "$epoch" >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$ROLE_LABELS_FILE"
    log "$POD_NAME: ordinal $ordinal, $role (record epoch $epoch), server_id $server_id"
}

main "$@"
