#!/usr/bin/env bash
# init-config.sh: init container `init-config` (see CONTRACT.md).
#
# The pod's role and server-id come from its StatefulSet ordinal, never from randomness: random ids
# collide, and a stable id per ordinal keeps binary logs and GTIDs attributable across restarts.
# Ordinal 0 is the primary; every other ordinal is a read-only replica. The result goes to
# CONF_DIR, an emptyDir the server reads as its conf.d, so a fresh pod always gets fresh config.
set -euo pipefail
SCRIPT_NAME=init-config
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

# mysql.tls: TLS_DIR set (the Secret's mount) puts conf/tls/tls.cnf into conf.d, pointed at it;
# REQUIRE_SECURE_TRANSPORT=on adds require-secure-transport.cnf. Otherwise neither is left.
tls_config() {
    local name content
    rm -f "$CONF_DIR/tls.cnf" "$CONF_DIR/require-secure-transport.cnf"
    [[ -n "${TLS_DIR:-}" ]] || return 0
    local names=(tls.cnf)
    case "${REQUIRE_SECURE_TRANSPORT:-off}" in
        on) names+=(require-secure-transport.cnf) ;;
        off) ;;
        *) die "REQUIRE_SECURE_TRANSPORT must be 'on' or 'off', got '$REQUIRE_SECURE_TRANSPORT'" ;;
    esac
    for name in "${names[@]}"; do
        [[ -f "$CONFIG_DIR/$name" ]] || die "$CONFIG_DIR/$name is missing from the ConfigMap (TLS is on)"
        content=$(<"$CONFIG_DIR/$name")
        printf '%s\n' "${content//\/etc\/mysql\/tls/$TLS_DIR}" >"$CONF_DIR/$name"
        chmod 0644 "$CONF_DIR/$name"
    done
}

main() {
    require_vars POD_NAME SERVER_ID_BASE CONF_DIR CONFIG_DIR MYSQL_PORT
    require_uint SERVER_ID_BASE "$SERVER_ID_BASE"
    ((SERVER_ID_BASE >= 1000 && SERVER_ID_BASE % 1000 == 0)) \
        || die "SERVER_ID_BASE must be a multiple of 1000 and at least 1000, got $SERVER_ID_BASE"
    local ordinal server_id role
    ordinal=$(pod_ordinal)
    # Each cluster owns the block [base, base + 999]; server_id is a 32-bit unsigned integer.
    ((ordinal < 1000)) || die "ordinal $ordinal does not fit the server-id block of 1000"
    server_id=$((SERVER_ID_BASE + ordinal))
    ((server_id <= 4294967295)) || die "server-id $server_id exceeds 4294967295"
    if ((ordinal == 0)); then role=primary; else role=replica; fi
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
    # A role never changes for an ordinal, but never leave both files for the server to merge.
    rm -f "$CONF_DIR/$([[ $role == primary ]] && echo replica || echo primary).cnf"
    tls_config
    log "$POD_NAME: ordinal $ordinal, $role, server_id $server_id, TLS ${TLS_DIR:+on}${TLS_DIR:-off}"
}

main "$@"
