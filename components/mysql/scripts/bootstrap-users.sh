#!/usr/bin/env bash
# bootstrap-users.sh: the primary's accounts (see CONTRACT.md, Accounts).
#
# Runs from the image's /docker-entrypoint-initdb.d on the primary's first start, while the
# entrypoint's temporary server listens on its unix socket only (SOCKET, set by both the MariaDB
# and the MySQL entrypoint) and root already has the password the entrypoint read from
# <PREFIX>_ROOT_PASSWORD_FILE: the same Secret key as ROOT_PASSWORD_FILE, which this script reads.
# Every password comes from the credentials volume of the mysql container (read_secret); the
# entrypoint's environment holds only the *_FILE paths. The entrypoints *source* *.sh files
# that are not executable (a ConfigMap mount is not), so when sourced this file runs itself in a
# child bash: its strict mode and its exit cannot leak into the entrypoint, and a failure still
# fails the entrypoint. Test harnesses run it directly with SOCKET pointing at their server.
#
# Replicas get these accounts through their clone; nothing here runs on a replica.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    SOCKET="${SOCKET:-}" bash "${BASH_SOURCE[0]}"
    # shellcheck disable=SC2317  # reached only when sourced
    return
fi
set -euo pipefail
SCRIPT_NAME="bootstrap-users"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

main() {
    require_flavor
    require_vars SOCKET RUN_DIR DATA_DIR
    # Every input is read and validated before anything is written or run: bad input changes
    # nothing. The passwords are shell variables from here on, never exported.
    local account
    for account in ROOT ADMIN REPLICATION MONITOR BACKUP TOPOLOGY; do
        read_secret "${account}_PASSWORD"
    done
    local sql options="$RUN_DIR/root-client.cnf"
    sql=$(bootstrap_users_sql)
    # Expanded now: the trap runs after main's locals are gone. Root's password never lingers.
    # shellcheck disable=SC2064
    trap "rm -f -- $(printf '%q' "$options")" EXIT
    write_client_options "$options" root "$ROOT_PASSWORD" socket "$SOCKET"
    run_sql "$options" <<<"$sql"
    # This data dir is the first primary's own (clone.sh keeps it when the primary moves away).
    write_marker "$DATA_DIR/$BOOTSTRAP_COMPLETE_MARKER" "at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    log "created accounts $ADMIN_USER, $REPLICATION_USER, $MONITOR_USER, $BACKUP_USER, $TOPOLOGY_USER"
}

main "$@"
