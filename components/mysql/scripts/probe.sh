#!/usr/bin/env bash
# probe.sh startup|liveness|readiness: the mysql container's probes (see CONTRACT.md).
#
#   startup    the server accepts queries
#   liveness   the server process answers (mysqladmin ping also succeeds on "access denied": a
#              server that is up but refuses the monitor account is not a reason to restart it)
#   readiness  primary: accepts queries and is writable. replica: IO and SQL threads running and
#              lag <= MAX_REPLICA_LAG_SECONDS, so readers are never sent to a stale or broken copy
#
# The monitor account connects over TCP to 127.0.0.1 with an option file in RUN_DIR (0600).
set -euo pipefail
SCRIPT_NAME=probe
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

# replica_status_ready MAX_LAG < `SHOW REPLICA STATUS` in vertical format; prints why not ready.
replica_status_ready() {
    local max_lag=$1 key value io="" sql="" lag="" seen=no
    local io_key=Slave_IO_Running sql_key=Slave_SQL_Running lag_key=Seconds_Behind_Master
    if [[ $MYSQL_FLAVOR == mysql ]]; then
        io_key=Replica_IO_Running sql_key=Replica_SQL_Running lag_key=Seconds_Behind_Source
    fi
    while IFS=: read -r key value; do
        key=${key//[[:space:]]/}
        value=${value#"${value%%[![:space:]]*}"}
        case "$key" in
            "$io_key") io=$value seen=yes ;;
            "$sql_key") sql=$value ;;
            "$lag_key") lag=$value ;;
        esac
    done
    [[ $seen == yes ]] || { echo "replication is not configured"; return 1; }
    [[ $io == Yes ]] || { echo "IO thread is '$io'"; return 1; }
    [[ $sql == Yes ]] || { echo "SQL thread is '$sql'"; return 1; }
    [[ "$lag" =~ ^[0-9]+$ ]] || { echo "lag is unknown ('$lag')"; return 1; }
    ((lag <= max_lag)) || { echo "lag ${lag}s exceeds ${max_lag}s"; return 1; }
}

main() {
    local mode=${1:-}
    require_flavor
    require_vars POD_NAME RUN_DIR MYSQL_PORT MONITOR_USER MONITOR_PASSWORD
    local ordinal options="$RUN_DIR/monitor-client.cnf"
    ordinal=$(pod_ordinal)
    write_client_options "$options" "$MONITOR_USER" "$MONITOR_PASSWORD" host 127.0.0.1 \
        "$(peer_port "$MYSQL_PORT" "$ordinal")"
    case "$mode" in
        startup)
            run_sql "$options" <<<'SELECT 1' >/dev/null
            ;;
        liveness)
            "$(admin_tool)" --defaults-file="$options" --connect-timeout=5 ping >/dev/null
            ;;
        readiness)
            if ((ordinal == 0)); then
                local read_only
                if [[ $MYSQL_FLAVOR == mysql ]]; then
                    read_only=$(run_sql "$options" <<<'SELECT @@GLOBAL.read_only + @@GLOBAL.super_read_only')
                else
                    read_only=$(run_sql "$options" <<<'SELECT @@GLOBAL.read_only')
                fi
                [[ $read_only == 0 ]] || die "primary is read-only"
            else
                require_vars MAX_REPLICA_LAG_SECONDS
                require_uint MAX_REPLICA_LAG_SECONDS "$MAX_REPLICA_LAG_SECONDS"
                local status reason
                status=$("$(sql_client_tool)" --defaults-file="$options" --connect-timeout=10 \
                    --vertical <<<'SHOW REPLICA STATUS')
                reason=$(replica_status_ready "$MAX_REPLICA_LAG_SECONDS" <<<"$status") \
                    || die "replica not ready: $reason"
            fi
            ;;
        *) die "usage: probe.sh startup|liveness|readiness" ;;
    esac
}

# Sourced by the unit tests for replica_status_ready; run by the kubelet otherwise.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
