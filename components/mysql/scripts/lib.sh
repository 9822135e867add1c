# shellcheck shell=bash
# Shared code for the pod scripts (see CONTRACT.md). Sourced, never run.
#
# Why the pieces look the way they do:
# - The pods' SQL and backup file names are decided here, in functions that only print, so
#   tests/unit/test_pod_scripts_sql.py can source this file with MySQL 8.4's environment and
#   assert the exact statements and commands MySQL 8.4 pods would run without a MySQL server
#   being available. Tool names and the socket come from the environment (flavor.py).
# - Passwords come from the cluster Secret mounted as files (CONTRACT.md, Credentials), read
#   once per script by read_secret into shell variables that are never exported, and reach the
#   tools only through option files in RUN_DIR (mode 0600) or SQL on stdin: never argv, which
#   any process can read, and never the environment, which every child inherits.
# - Positions recorded by the backup tool are parsed field by field and validated against a
#   strict character set before they go anywhere near SQL; the backup's own SQL is never pasted.

# Command substitutions obey `set -e` too: a failure inside $(...) must not yield a silent "".
shopt -s inherit_errexit

# The backup sidecar's listener PID (backup-server.sh writes it just before it execs the
# listener, so it is the listener's own PID, or under TLS each time it starts one); probe.sh
# backup checks it without connecting.
backup_listener_pid_file() {
    require_vars RUN_DIR
    printf '%s\n' "$RUN_DIR/backup-listener.pid"
}

agent_listener_pid_file() {
    require_vars RUN_DIR
    printf '%s\n' "$RUN_DIR/backup-agent-listener.pid"
}

# Markers in DATA_DIR, written atomically (temp file + rename), that say what the data dir holds.
# (Used by the scripts that source this file.)
# shellcheck disable=SC2034
{
    CLONE_IN_PROGRESS_MARKER=".clone-in-progress"
    CLONE_COMPLETE_MARKER=".clone-complete"
    REPLICATION_CONFIGURED_MARKER=".replication-configured"
    REPLICATION_STARTED_MARKER=".replication-started"
    # Written by bootstrap-users.sh into the data dir the image initialised: this server began
    # as the cluster's first primary, so its data is its own, not a foreign or partial copy.
    BOOTSTRAP_COMPLETE_MARKER=".bootstrap-complete"
    # restore.sh / restore-init.sh: a restore from the object store, in its three stages.
    RESTORE_IN_PROGRESS_MARKER=".restore-in-progress"
    RESTORE_PREPARED_MARKER=".restore-prepared"
    RESTORE_COMPLETE_MARKER=".restore-complete"
}

# holds_first_primary_data DIR: DIR is the cluster's first primary's own data, initialised by
# the image and bootstrapped, or restored from a backup at deploy (mysql.restore): never a
# partial or foreign copy. clone.sh keeps it and backup-server.sh leaves its replication to the
# server when the primary has moved away from it, as for a completed clone.
holds_first_primary_data() {
    [[ -f "$1/$BOOTSTRAP_COMPLETE_MARKER" || -f "$1/$RESTORE_COMPLETE_MARKER" ]]
}

log() {
    printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${SCRIPT_NAME:-${0##*/}}" "$*" >&2
}

die() {
    log "FATAL: $*"
    exit 1
}

# Fails naming every variable that is unset or empty: an empty password must never reach a server.
require_vars() {
    local name missing=()
    for name in "$@"; do
        [[ -n "${!name:-}" ]] || missing+=("$name")
    done
    ((${#missing[@]} == 0)) || die "required environment variable(s) empty or unset: ${missing[*]}"
}

# read_secret NAME: sets the shell variable NAME from the file that NAME_FILE names (a key of the
# cluster Secret's read-only volume). Fails naming the variable and the path when NAME_FILE is
# unset, the file is missing, unreadable or empty (a password is never empty), or when NAME
# itself is in the environment: the images' entrypoints refuse VAR beside VAR_FILE too, and a
# password in the environment is what the files are there to avoid. The variable is not
# exported, so nothing the script runs inherits it; its value is never printed. Trailing
# newlines are dropped, as the entrypoints' file_env does.
read_secret() {
    local name=$1 file_variable="$1_FILE" path value
    [[ "$name" =~ ^[A-Z][A-Z0-9_]*$ ]] || die "read_secret: '$name' is not a variable name"
    if [[ -v "$name" && "${!name@a}" == *x* ]]; then
        die "$name is set in the environment; passwords are read only from files" \
            "($file_variable; see CONTRACT.md, Credentials)"
    fi
    path=${!file_variable:-}
    [[ -n "$path" ]] || die "$file_variable is unset or empty: it must name the file holding $name"
    [[ -f "$path" ]] \
        || die "$file_variable: no file at $path (is the credentials volume mounted in this container?)"
    [[ -r "$path" ]] || die "$file_variable: $path is not readable by uid $(id -u)"
    value=$(<"$path")
    [[ -n "$value" ]] || die "$file_variable: $path is empty; a password is never empty"
    printf -v "$name" '%s' "$value"
}

require_uint() {
    local name=$1 value=$2
    [[ "$value" =~ ^[0-9]+$ ]] || die "$name must be a non-negative integer, got '$value'"
}

# The StatefulSet ordinal: the number after the last '-' of POD_NAME (e.g. orders-mysql-2 -> 2).
pod_ordinal() {
    require_vars POD_NAME
    [[ "$POD_NAME" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?-([0-9]+)$ ]] \
        || die "cannot read the ordinal from POD_NAME='$POD_NAME' (expected <statefulset>-<number>)"
    printf '%d\n' "$((10#${BASH_REMATCH[2]}))"
}

peer_host() {
    require_vars PEER_HOST_TEMPLATE
    printf '%s\n' "${PEER_HOST_TEMPLATE//\{ordinal\}/$1}"
}

# A pod's port: PORT + ordinal * PORT_STRIDE (stride 0 in Kubernetes, where every pod has its own IP).
peer_port() {
    local base=$1 ordinal=$2 stride=${PORT_STRIDE:-0}
    require_uint PORT_STRIDE "$stride"
    require_uint port "$base"
    printf '%d\n' "$((base + ordinal * stride))"
}

# mariadb_gtid_reached CURRENT GTID: whether the MariaDB GTID position CURRENT has reached GTID in
# every replication domain of GTID (a sequence number at least as high; within a domain they only
# grow, whichever server wrote them). Not string equality: a clone taken from a primary that was
# once a replica carries that old replica's gtid_slave_pos, which is *behind* the clone's position
# and must be replaced, while a position that replication has already advanced is ahead.
mariadb_gtid_reached() {
    local current=$1 wanted=$2 entry domain seq have found
    local -a wanted_entries current_entries
    IFS=, read -ra wanted_entries <<<"$wanted"
    IFS=, read -ra current_entries <<<"$current"
    for entry in "${wanted_entries[@]}"; do
        [[ "$entry" =~ ^([0-9]+)-[0-9]+-([0-9]+)$ ]] || return 1
        domain=${BASH_REMATCH[1]} seq=${BASH_REMATCH[2]} found=no
        for have in "${current_entries[@]}"; do
            if [[ "$have" =~ ^([0-9]+)-[0-9]+-([0-9]+)$ ]] && ((BASH_REMATCH[1] == domain)); then
                found=yes
                ((BASH_REMATCH[2] >= seq)) || return 1
            fi
        done
        [[ $found == yes ]] || return 1
    done
}

# --- the primary record ------------------------------------------------------------------------
# Which ordinal is the primary is decided by ReplicationInit and kept in the primary record
# (components/mysql/_record.py), a ConfigMap the pods mount at RECORD_DIR: files `primary` (an
# ordinal, or `none` while a switchover holds it), `epoch` and, while fenced, `previous`. The
# mount is optional: before the first `pulumi up` wrote a record the directory is empty, and
# ordinal 0 is where a new cluster starts. The files are read when a pod starts, never to decide
# whether a server may accept writes: every server starts read-only, and only the holder of
# the record's epoch opens one.

# _record_field NAME: the record's field, or nothing when there is no record.
_record_field() {
    local file="${RECORD_DIR:-}/$1"
    [[ -n "${RECORD_DIR:-}" && -f "$file" ]] || return 0
    local value
    value=$(<"$file")
    printf '%s\n' "$value"
}

_record_ordinal() {
    [[ "$2" =~ ^[0-9]+$ ]] || die "the primary record's $1 is '$2', not an ordinal" \
        "(RECORD_DIR=${RECORD_DIR:-}); fix or delete the record ConfigMap"
    printf '%d\n' "$((10#$2))"
}

# The ordinal that holds every acknowledged commit: the recorded primary, or while a switchover
# fences the record the one it is moving away from (read-only; the others copy it). 0 when there
# is no record yet.
recorded_authority() {
    local primary
    primary=$(_record_field primary)
    if [[ -z "$primary" ]]; then
        printf '0\n'
    elif [[ "$primary" == none ]]; then
        _record_ordinal previous "$(_record_field previous)"
    else
        _record_ordinal primary "$primary"
    fi
}

# recorded_role ORDINAL: `primary` when the record names ORDINAL (before any record: ordinal 0);
# `replica` otherwise, and for every ordinal while the record is fenced.
recorded_role() {
    local primary
    primary=$(_record_field primary)
    if [[ -z "$primary" ]]; then
        primary=0
    elif [[ "$primary" == none ]]; then
        printf 'replica\n'
        return 0
    fi
    if (($(_record_ordinal primary "$primary") == $1)); then
        printf 'primary\n'
    else
        printf 'replica\n'
    fi
}

# The record's epoch; 0 before any record.
recorded_epoch() {
    local epoch
    epoch=$(_record_field epoch)
    _record_ordinal epoch "${epoch:-0}"
}

require_flavor() {
    require_vars MYSQL_FLAVOR
    case "$MYSQL_FLAVOR" in
        mysql | mariadb) ;;
        *) die "MYSQL_FLAVOR must be 'mysql' or 'mariadb', got '$MYSQL_FLAVOR'" ;;
    esac
}

# --- flavor facts: the only place the shell side branches on MYSQL_FLAVOR ----------------------
# Tools and paths come from the environment (below); what is left is the SQL dialect, here and
# in the SQL section, so the other scripts ask these functions instead of naming a flavor.

# The SHOW REPLICA STATUS fields for the IO thread, the SQL thread and the lag, space-separated:
# MySQL 8.4 renamed them (Replica_*, *_Source), MariaDB keeps the Slave_*/Master names.
replica_status_keys() {
    require_flavor
    if [[ $MYSQL_FLAVOR == mysql ]]; then
        echo "Replica_IO_Running Replica_SQL_Running Seconds_Behind_Source"
    else
        echo "Slave_IO_Running Slave_SQL_Running Seconds_Behind_Master"
    fi
}

# Makes the server load the certificate files again without a restart.
tls_reload_sql() {
    require_flavor
    if [[ $MYSQL_FLAVOR == mysql ]]; then echo "ALTER INSTANCE RELOAD TLS;"; else echo "FLUSH SSL;"; fi
}

# Succeeds when a replica is positioned by a GTID position the server keeps and that setting it
# again would rewind (MariaDB's gtid_slave_pos); fails when positioning is automatic from
# gtid_executed and never rewinds (MySQL's SOURCE_AUTO_POSITION).
replica_position_is_kept() {
    require_flavor
    [[ $MYSQL_FLAVOR == mariadb ]]
}

# require_mariadb WHAT: stops a script whose feature exists for MariaDB only so far; WHAT is the
# sentence's subject and verb ("restores support"), the message ends "MariaDB only so far".
require_mariadb() {
    require_flavor
    [[ $MYSQL_FLAVOR == mariadb ]] || die "$1 MariaDB only so far"
}

# The flavor's tools and the server's socket are handed to every container (CONTRACT.md,
# Environment; components/mysql/flavor.py decides them): nothing here branches on the flavor
# for them. The socket is in the directory the StatefulSet shares between the mysql and backup
# containers, where the image's own config puts it.
server_socket() { require_vars MYSQL_SOCKET; printf '%s\n' "$MYSQL_SOCKET"; }
sql_client_tool() { require_vars MYSQL_CLIENT; printf '%s\n' "$MYSQL_CLIENT"; }
admin_tool() { require_vars MYSQL_ADMIN_TOOL; printf '%s\n' "$MYSQL_ADMIN_TOOL"; }
backup_tool() { require_vars BACKUP_TOOL; printf '%s\n' "$BACKUP_TOOL"; }
stream_tool() { require_vars BACKUP_STREAM_TOOL; printf '%s\n' "$BACKUP_STREAM_TOOL"; }

# A single-quoted SQL string literal (the server runs without NO_BACKSLASH_ESCAPES).
sql_quote() {
    local value=$1
    value=${value//\\/\\\\}
    value=${value//\'/\\\'}
    printf "'%s'" "$value"
}

# A double-quoted option-file value: the option-file parser unescapes \\ and \" inside quotes,
# and the quotes keep '#' from starting a comment.
option_quote() {
    local value=$1
    [[ "$value" != *$'\n'* ]] || die "a credential contains a newline, which option files cannot hold"
    value=${value//\\/\\\\}
    value=${value//\"/\\\"}
    printf '"%s"' "$value"
}

# write_client_options PATH USER PASSWORD (host HOST PORT | socket SOCKET)
# Atomic and created 0600 from the start, so the password is never readable by others, even briefly.
# The temp file is named in WRITING_CLIENT_OPTIONS until the rename, so that a script's trap can
# remove it when a signal ends the script in between (remove_unfinished_client_options).
write_client_options() {
    local path=$1 user=$2 password=$3 kind=$4 tmp quoted_user quoted_password location
    [[ -n "$password" ]] || die "empty password for account '$user'"
    # Quoted into variables first: a failure inside a command substitution that is only an
    # argument of printf would not stop the script, and an empty password would be written.
    quoted_user=$(option_quote "$user")
    quoted_password=$(option_quote "$password")
    case "$kind" in
        host)
            require_uint port "$6"
            location=$(printf 'host=%s\nport=%d' "$(option_quote "$5")" "$6")
            ;;
        socket) location=$(printf 'socket=%s' "$(option_quote "$5")") ;;
        *) die "write_client_options: unknown connection kind '$kind'" ;;
    esac
    mkdir -p "$(dirname "$path")"
    # One assignment: a trap runs between commands, so it never sees the file unnamed.
    WRITING_CLIENT_OPTIONS=$(umask 077 && mktemp "$path.XXXXXX")
    tmp=$WRITING_CLIENT_OPTIONS
    # [client] for the SQL clients and mariadb-backup; [xtrabackup] because Percona XtraBackup
    # reads only its own and the [mysqld] groups. protocol=TCP keeps the clients from turning
    # "localhost" into a socket; XtraBackup does not know the option.
    local tcp=""
    if [[ $kind == host ]]; then tcp=$'protocol=TCP\n'; fi
    printf '[client]\nuser=%s\npassword=%s\n%s\n%s[xtrabackup]\nuser=%s\npassword=%s\n%s\n' \
        "$quoted_user" "$quoted_password" "$location" "$tcp" \
        "$quoted_user" "$quoted_password" "$location" >"$tmp"
    mv -f "$tmp" "$path"
    WRITING_CLIENT_OPTIONS=""
}

# The EXIT trap of a script that can be stopped while write_client_options runs: removes the temp
# file of a write that never reached its rename (it holds a password).
remove_unfinished_client_options() {
    if [[ -n "${WRITING_CLIENT_OPTIONS:-}" ]]; then
        rm -f -- "$WRITING_CLIENT_OPTIONS"
    fi
}

# write_local_client_options PATH USER PASSWORD PORT: options for an account of this pod's own
# server: TCP to 127.0.0.1:PORT, or with TLS on (TLS_DIR set) the pod-local socket, which
# requireSecureTransport leaves open and which needs no certificate naming 127.0.0.1. The
# accounts that connect this way (monitor, backup) exist @localhost and @127.0.0.1.
write_local_client_options() {
    local path=$1 user=$2 password=$3 port=$4
    if [[ -n "${TLS_DIR:-}" ]]; then
        write_client_options "$path" "$user" "$password" socket "$(server_socket)"
    else
        write_client_options "$path" "$user" "$password" host 127.0.0.1 "$port"
    fi
}

# run_sql OPTION_FILE [client args...]: statements on stdin, tab-separated rows on stdout.
run_sql() {
    local options=$1
    shift
    "$(sql_client_tool)" --defaults-file="$options" --batch --skip-column-names \
        --connect-timeout=10 "$@"
}

# write_marker PATH LINE...: atomically writes a marker file with the given content lines.
# The temp file is PATH.XXXXXX beside it, because a rename is atomic only within one file
# system and a container sees no other directory of its volume. A SIGKILL between mktemp and
# the rename leaves that temp file behind, so readers must know it: marker_temps finds them,
# clone.sh counts a clone marker's temp as its own (in-progress) work, and every writer removes
# its own markers' stale temps before it relies on the directory. The directory is synced
# after the rename so that a marker that vouches for data does not vanish in a power loss.
write_marker() {
    local path=$1 tmp
    shift
    tmp=$(mktemp "$path.XXXXXX")
    printf '%s\n' "$@" >"$tmp"
    sync "$tmp" 2>/dev/null || true
    mv -f "$tmp" "$path"
    sync "$(dirname "$path")" 2>/dev/null || true
}

# marker_temps DIR NAME...: prints the temp files write_marker (or write_client_options) left
# in DIR for any of the NAMEs (NAME.XXXXXX, mktemp's six characters).
marker_temps() {
    local dir=$1 name
    shift
    for name in "$@"; do
        find "$dir" -mindepth 1 -maxdepth 1 -type f -name "$name.??????" -print
    done
}

# remove_marker_temps DIR NAME...: deletes them. Only for files no other process is writing at
# the same time (each caller names only files that it alone writes).
remove_marker_temps() {
    local temp
    while IFS= read -r temp; do
        rm -f -- "$temp"
    done < <(marker_temps "$@")
}

# --- backup metadata ---------------------------------------------------------------------------

# backup_meta_file DIR KIND: the file the backup tool wrote for KIND (binlog_info, slave_info,
# checkpoints, info). MariaDB 11.1+ names them mariadb_backup_*, older ones and XtraBackup xtrabackup_*.
backup_meta_file() {
    local dir=$1 kind=$2 name
    for name in "mariadb_backup_$kind" "xtrabackup_$kind"; do
        if [[ -f "$dir/$name" ]]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done
    return 1
}

# Only the characters a GTID set can contain reach SQL; anything else means the file is not what
# the backup tool writes, and we stop instead of guessing.
validate_gtid_set() {
    local gtid=$1 element
    [[ -z "$gtid" ]] && return 0
    local -a elements
    IFS=, read -r -a elements <<<"$gtid"
    for element in "${elements[@]}"; do
        if [[ $MYSQL_FLAVOR == mariadb ]]; then
            [[ "$element" =~ ^[0-9]+-[0-9]+-[0-9]+$ ]] || return 1
        else
            # source UUID, then tags (8.4) and intervals: 3E11FA47-...:1-5:tag:7
            [[ "$element" =~ ^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(:([A-Za-z_][A-Za-z0-9_]{0,31}|[0-9]+(-[0-9]+)?))+$ ]] \
                || return 1
        fi
    done
}

# parse_binlog_info FILE: prints the GTID set. The file holds "file<TAB>position<TAB>gtid"; MySQL's
# GTID set is printed with ",\n" between source UUIDs, so continuation lines belong to the third
# field. (The design this replaces split MariaDB's three fields with a greedy regex.)
parse_binlog_info() {
    local path=$1 file position gtid line
    {
        IFS=$' \t' read -r file position gtid || [[ -n "${file:-}" ]]
        while IFS= read -r line || [[ -n "$line" ]]; do
            gtid+=$line
        done
    } <"$path"
    gtid=${gtid//[[:space:]]/}
    [[ -n "${file:-}" && "${position:-}" =~ ^[0-9]+$ ]] \
        || die "$path: expected 'file position gtid', got file='${file:-}' position='${position:-}'"
    validate_gtid_set "$gtid" || die "$path: '$gtid' is not a $MYSQL_FLAVOR GTID set"
    printf '%s\n' "$gtid"
}

# parse_slave_info FILE: prints the GTID set named in the replica info the backup tool writes when
# the donor is itself a replica (MariaDB: SET GLOBAL gtid_slave_pos = '...'; XtraBackup:
# SET GLOBAL gtid_purged='...'). Returns 1 when the file names no GTID (position-based donor).
parse_slave_info() {
    local path=$1 content gtid
    content=$(<"$path")
    [[ "$content" =~ gtid_(slave_pos|purged)[[:space:]]*=[[:space:]]*\'([^\']*)\' ]] || return 1
    gtid=${BASH_REMATCH[2]}
    gtid=${gtid//[[:space:]]/}
    validate_gtid_set "$gtid" || die "$path: '$gtid' is not a $MYSQL_FLAVOR GTID set"
    printf '%s\n' "$gtid"
}

# backup_gtid DIR: the GTID set the clone in DIR corresponds to. A backup taken from a replica
# carries the replica's applied position in the replica info: that is what the primary knows
# about, so it is preferred over the donor's own binary-log position.
backup_gtid() {
    local dir=$1 info gtid
    require_flavor
    if info=$(backup_meta_file "$dir" slave_info) && gtid=$(parse_slave_info "$info"); then
        log "position from the donor's replica info ${info##*/}: '$gtid'"
        printf '%s\n' "$gtid"
        return 0
    fi
    info=$(backup_meta_file "$dir" binlog_info) \
        || die "$dir holds no binlog info (xtrabackup_binlog_info / mariadb_backup_binlog_info)"
    gtid=$(parse_binlog_info "$info")
    log "position from the donor's binlog info ${info##*/}: '$gtid'"
    printf '%s\n' "$gtid"
}

# --- SQL ---------------------------------------------------------------------------------------

# MySQL only: the part of the backup's GTID set the restored server does not already have. Since
# 8.0.17 gtid_executed is persisted with every InnoDB commit, so after a restore this is normally
# empty; only what is missing is added to gtid_purged.
missing_gtids_sql() {
    printf 'SELECT GTID_SUBTRACT(%s, @@GLOBAL.gtid_executed);\n' "$(sql_quote "$1")"
}

# replication_configure_sql GTID SOURCE_HOST SOURCE_PORT USER PASSWORD
# Idempotent until replication is first started (the marker files guarantee it never runs after).
# MariaDB: GTID is the backup's position, set as gtid_slave_pos. MySQL: GTID is what the restored
# server lacks (see missing_gtids_sql); positioning itself is automatic.
replication_configure_sql() {
    local gtid=$1 host=$2 port=$3 user=$4 password=$5 tls
    require_flavor
    tls=$(replication_tls_sql)
    require_uint "replication source port" "$port"
    validate_gtid_set "$gtid" || die "refusing to put '$gtid' into SQL: not a $MYSQL_FLAVOR GTID set"
    printf 'STOP REPLICA;\n'
    if [[ $MYSQL_FLAVOR == mariadb ]]; then
        printf 'SET GLOBAL gtid_slave_pos = %s;\n' "$(sql_quote "$gtid")"
        printf 'CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %d, MASTER_USER = %s, MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 10%s;\n' \
            "$(sql_quote "$host")" "$port" "$(sql_quote "$user")" "$(sql_quote "$password")" "$tls"
    else
        if [[ -n "$gtid" ]]; then
            printf 'SET GLOBAL gtid_purged = %s;\n' "$(sql_quote "+$gtid")"
        fi
        printf 'CHANGE REPLICATION SOURCE TO SOURCE_HOST = %s, SOURCE_PORT = %d, SOURCE_USER = %s, SOURCE_PASSWORD = %s, SOURCE_AUTO_POSITION = 1, GET_SOURCE_PUBLIC_KEY = 1, SOURCE_CONNECT_RETRY = 10%s;\n' \
            "$(sql_quote "$host")" "$port" "$(sql_quote "$user")" "$(sql_quote "$password")" "$tls"
    fi
}

replication_start_sql() {
    printf 'START REPLICA;\n'
}

# Explicit privileges only. The admin account never gets ALL, SUPER, READ ONLY ADMIN (MariaDB) or
# CONNECTION_ADMIN / SYSTEM_VARIABLES_ADMIN (MySQL): any of them lets it write on a read-only
# replica, which is how errant GTIDs are born. It holds REPLICATION SLAVE only so that it can
# grant it: the ReplicationInit provider repairs the replication account as admin.
#
# The topology account is the one that moves the primary (ReplicationInit's switchover): it may set
# read_only, end other sessions and run the replication statements (MariaDB's RESET REPLICA ALL needs
# RELOAD), and reads or writes no data. On MariaDB setting read_only takes READ ONLY ADMIN, so this
# account could write through read_only if it held any data privilege; it holds none.
#
# The exporter account (the mysqld_exporter sidecar) reads replication status and the global
# status and variables; it reaches the server through the pod-local socket only (localhost), and
# three connections at most, so a hung server is not buried under scrapes.
bootstrap_users_sql() {
    require_flavor
    require_vars ADMIN_USER ADMIN_PASSWORD REPLICATION_USER REPLICATION_PASSWORD \
        MONITOR_USER MONITOR_PASSWORD BACKUP_USER BACKUP_PASSWORD TOPOLOGY_USER TOPOLOGY_PASSWORD \
        EXPORTER_USER EXPORTER_PASSWORD
    local admin_privileges repl_privileges monitor_privileges backup_privileges host
    local topology_privileges
    local common="SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, PROCESS, REFERENCES, INDEX, ALTER, SHOW DATABASES, CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, CREATE USER, EVENT, TRIGGER"
    repl_privileges="REPLICATION SLAVE"
    if [[ $MYSQL_FLAVOR == mariadb ]]; then
        admin_privileges="$common, BINLOG MONITOR, SLAVE MONITOR, REPLICATION SLAVE, REPLICATION SLAVE ADMIN"
        monitor_privileges="SLAVE MONITOR"
        backup_privileges="RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR, SLAVE MONITOR"
        topology_privileges="READ_ONLY ADMIN, CONNECTION ADMIN, REPLICATION SLAVE ADMIN, SLAVE MONITOR, BINLOG MONITOR, REPLICATION MASTER ADMIN, RELOAD, PROCESS"
    else
        admin_privileges="$common, REPLICATION CLIENT, REPLICATION SLAVE, REPLICATION_SLAVE_ADMIN"
        monitor_privileges="REPLICATION CLIENT"
        backup_privileges="BACKUP_ADMIN, PROCESS, RELOAD, LOCK TABLES, REPLICATION CLIENT"
        topology_privileges="SYSTEM_VARIABLES_ADMIN, CONNECTION_ADMIN, REPLICATION_SLAVE_ADMIN, REPLICATION CLIENT, RELOAD, PROCESS"
    fi
    _account_sql "$ADMIN_USER" % "$ADMIN_PASSWORD"
    printf 'GRANT %s ON *.* TO %s@%s WITH GRANT OPTION;\n' "$admin_privileges" \
        "$(sql_quote "$ADMIN_USER")" "'%'"
    _account_sql "$REPLICATION_USER" % "$REPLICATION_PASSWORD"
    printf 'GRANT %s ON *.* TO %s@%s;\n' "$repl_privileges" "$(sql_quote "$REPLICATION_USER")" "'%'"
    _account_sql "$TOPOLOGY_USER" % "$TOPOLOGY_PASSWORD"
    printf 'GRANT %s ON *.* TO %s@%s;\n' "$topology_privileges" "$(sql_quote "$TOPOLOGY_USER")" "'%'"
    for host in localhost 127.0.0.1; do
        _account_sql "$MONITOR_USER" "$host" "$MONITOR_PASSWORD"
        printf 'GRANT %s ON *.* TO %s@%s;\n' "$monitor_privileges" \
            "$(sql_quote "$MONITOR_USER")" "$(sql_quote "$host")"
        _account_sql "$BACKUP_USER" "$host" "$BACKUP_PASSWORD"
        printf 'GRANT %s ON *.* TO %s@%s;\n' "$backup_privileges" \
            "$(sql_quote "$BACKUP_USER")" "$(sql_quote "$host")"
        if [[ $MYSQL_FLAVOR == mysql ]]; then
            local table
            for table in log_status keyring_component_status replication_group_members; do
                printf 'GRANT SELECT ON performance_schema.%s TO %s@%s;\n' "$table" \
                    "$(sql_quote "$BACKUP_USER")" "$(sql_quote "$host")"
            done
        fi
    done
    # SHOW REPLICA STATUS needs the same privilege the probes' account holds; the collectors
    # that would need PROCESS or performance_schema are off in the sidecar.
    _account_sql "$EXPORTER_USER" localhost "$EXPORTER_PASSWORD"
    printf 'ALTER USER %s@%s WITH MAX_USER_CONNECTIONS 3;\n' "$(sql_quote "$EXPORTER_USER")" "'localhost'"
    printf 'GRANT %s ON *.* TO %s@%s;\n' "$monitor_privileges" "$(sql_quote "$EXPORTER_USER")" "'localhost'"
}

# CREATE IF NOT EXISTS then ALTER: a re-run converges on the Secret's password instead of failing.
_account_sql() {
    local user host password
    user=$(sql_quote "$1")
    host=$(sql_quote "$2")
    password=$(sql_quote "$3")
    printf 'CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s;\n' "$user" "$host" "$password"
    printf 'ALTER USER %s@%s IDENTIFIED BY %s;\n' "$user" "$host" "$password"
}

# --- TLS (mysql.tls) ----------------------------------------------------------------------------

# shellcheck disable=SC2034  # used by the scripts that source this file
TLS_SECRET_FILES=(tls.crt tls.key ca.crt)

# tls_problem: prints what is wrong with TLS_DIR's files (the mounted TLS Secret), nothing when
# they are usable. tls-reload.sh runs it before every reload, probe.sh readiness on every probe:
# a server started with a broken pair may carry on without TLS (MariaDB logs the error and
# disables SSL), which only a check of the files reveals.
tls_problem() {
    local name path cert_key private_key
    for name in "${TLS_SECRET_FILES[@]}"; do
        path="$TLS_DIR/$name"
        [[ -s $path ]] || { echo "$path: missing or empty (the Secret needs tls.crt, tls.key and ca.crt)"; return; }
    done
    if ! openssl x509 -in "$TLS_DIR/tls.crt" -noout 2>/dev/null; then
        echo "$TLS_DIR/tls.crt: not a PEM certificate"; return
    fi
    if ! openssl x509 -in "$TLS_DIR/tls.crt" -noout -checkend 0 >/dev/null; then
        echo "$TLS_DIR/tls.crt: certificate expired ($(openssl x509 -in "$TLS_DIR/tls.crt" -noout -enddate))"
        return
    fi
    if ! private_key=$(openssl pkey -in "$TLS_DIR/tls.key" -pubout 2>/dev/null); then
        echo "$TLS_DIR/tls.key: not a readable unencrypted PEM private key"; return
    fi
    cert_key=$(openssl x509 -in "$TLS_DIR/tls.crt" -noout -pubkey)
    [[ $cert_key == "$private_key" ]] \
        || { echo "$TLS_DIR/tls.key: does not match the certificate in tls.crt"; return; }
    if ! openssl verify -CAfile "$TLS_DIR/ca.crt" "$TLS_DIR/tls.crt" >/dev/null 2>&1; then
        echo "$TLS_DIR/tls.crt: not signed by the CA in ca.crt"
    fi
}

# tls_digest: one digest of TLS_DIR's three files' content. The kubelet swaps a Secret volume's
# files in one atomic rename (..data), so a change of any of them is one new digest.
tls_digest() {
    local name
    for name in "${TLS_SECRET_FILES[@]}"; do
        cat -- "$TLS_DIR/$name" 2>/dev/null || true
    done | sha256sum | cut -d' ' -f1
}

# tls_changed SEEN DIGEST_VAR PROBLEM_VAR: the poll of the two rotation watchers (tls-reload.sh
# watch for the server, backup-server.sh for the clone listener). Fails when the files' digest
# is still SEEN, the content the watcher last acted on; otherwise sets DIGEST_VAR to the new
# digest and PROBLEM_VAR to what makes the files unusable (tls_problem; empty when they are
# fine). A watcher records DIGEST_VAR as seen either way, so a broken rotation is logged once,
# not on every pass, and the next change is checked afresh.
tls_changed() {
    local -n _tls_changed_digest=$2 _tls_changed_problem=$3
    _tls_changed_digest=$(tls_digest)
    [[ $_tls_changed_digest != "$1" ]] || return 1
    _tls_changed_problem=$(tls_problem)
}

# tls_reload_interval: how often the watchers poll TLS_DIR (TLS_RELOAD_INTERVAL seconds, 10).
tls_reload_interval() {
    local interval=${TLS_RELOAD_INTERVAL:-10}
    require_uint TLS_RELOAD_INTERVAL "$interval"
    printf '%d\n' "$interval"
}

# tls_certificate_summary: the certificate in TLS_DIR, as the watchers log what they now serve.
tls_certificate_summary() {
    openssl x509 -in "$TLS_DIR/tls.crt" -noout -serial -enddate | tr '\n' ' '
}

# replication_tls_sql: the CHANGE MASTER / CHANGE REPLICATION SOURCE options for replication
# over TLS with the primary's certificate verified against the Secret's CA, or nothing when
# TLS_DIR is unset (TLS off). components/mysql/_tls.py replication_tls_clause is the same clause
# for ReplicationInit; tests/unit/test_pod_scripts_sql.py keeps the two equal.
replication_tls_sql() {
    require_flavor
    [[ -n "${TLS_DIR:-}" ]] || return 0
    local ca
    ca=$(sql_quote "$TLS_DIR/ca.crt")
    if [[ $MYSQL_FLAVOR == mariadb ]]; then
        printf ', MASTER_SSL = 1, MASTER_SSL_CA = %s, MASTER_SSL_VERIFY_SERVER_CERT = 1' "$ca"
    else
        printf ', SOURCE_SSL = 1, SOURCE_SSL_CA = %s, SOURCE_SSL_VERIFY_SERVER_CERT = 1' "$ca"
    fi
}

# --- commands ----------------------------------------------------------------------------------

# backup_stream_command ARRAY OPTION_FILE TARGET_DIR IS_REPLICA: the backup tool streaming xbstream
# to stdout. --slave-info records the donor replica's applied position for the recipient.
backup_stream_command() {
    local -n _backup_stream_command=$1
    require_flavor
    local options=$2 target=$3 is_replica=$4
    require_vars DATA_DIR
    # Every scratch file of the tool goes to TARGET, which the caller removes afterwards.
    _backup_stream_command=("$(backup_tool)" --defaults-file="$options" --backup --stream=xbstream
        --datadir="$DATA_DIR" --target-dir="$target" --tmpdir="$target")
    if [[ "$is_replica" == yes ]]; then
        _backup_stream_command+=(--slave-info)
    fi
}

extract_command() {
    local -n _extract_command=$1
    require_flavor
    _extract_command=("$(stream_tool)" -x -C "$2")
}

prepare_command() {
    local -n _prepare_command=$1
    require_flavor
    _prepare_command=("$(backup_tool)" --prepare --target-dir="$2")
}

# The backup_type the tool writes into its checkpoints file once --prepare has succeeded.
prepared_backup_type() { require_vars BACKUP_PREPARED_TYPE; printf '%s\n' "$BACKUP_PREPARED_TYPE"; }

# --- transport: ncat when present, else socat (the MariaDB and XtraBackup images ship socat only) --

transport_tool() {
    if command -v ncat >/dev/null 2>&1; then
        echo ncat
    elif command -v socat >/dev/null 2>&1; then
        echo socat
    else
        die "neither ncat nor socat is installed: no way to stream a backup"
    fi
}

# The clone stream under mysql.tls (TLS_DIR set): the donor's listener serves the pod's
# certificate (tls.crt/tls.key), the receiver verifies it against ca.crt and checks that it names
# the donor's host as the receiver dialled it (PEER_HOST_TEMPLATE: the pod's DNS name, which the
# certificate must carry; ncat and OpenSSL accept no wildcard over a single-label parent such as
# *.<name>-headless). Plaintext is refused both ways: a plaintext peer gets no byte of the backup
# (the handshake fails before the listener runs the backup), and a receiver never accepts a
# plaintext or unverified stream. ncat and socat load the certificate once, when they start, so
# under TLS backup-server.sh supervises the listener and starts it again on rotated files,
# between streams (see its serve_following_rotation).

# transport_tls_check: dies naming what is wrong with the TLS Secret's files under TLS (the
# listener and the receiver would otherwise fail with a bare handshake error); nothing when off.
transport_tls_check() {
    [[ -n "${TLS_DIR:-}" ]] || return 0
    local problem="" name
    if command -v openssl >/dev/null 2>&1; then
        problem=$(tls_problem)
    else  # the files at least; ncat/socat name the rest
        for name in "${TLS_SECRET_FILES[@]}"; do
            [[ -s $TLS_DIR/$name ]] || { problem="$TLS_DIR/$name: missing or empty"; break; }
        done
    fi
    [[ -z $problem ]] || die "TLS for the clone stream: $problem"
    if [[ $(transport_tool) == socat && $TLS_DIR == *[:,!]* ]]; then
        die "TLS_DIR '$TLS_DIR' holds one of : , ! which socat's address syntax cannot carry"
    fi
}

# receive_command ARRAY HOST PORT: connects and copies the stream to stdout.
receive_command() {
    local -n _receive_command=$1
    local host=$2 port=$3
    case "$(transport_tool)" in
        ncat)
            _receive_command=(ncat --recv-only)
            if [[ -n "${TLS_DIR:-}" ]]; then
                _receive_command+=(--ssl --ssl-verify --ssl-trustfile "$TLS_DIR/ca.crt")
            fi
            _receive_command+=("$host" "$port")
            ;;
        socat)
            if [[ -n "${TLS_DIR:-}" ]]; then
                # verify=1 checks the chain and that the certificate names HOST.
                _receive_command=(socat -u "OPENSSL:$host:$port,cafile=$TLS_DIR/ca.crt,verify=1"
                    STDOUT)
            else
                _receive_command=(socat -u "TCP:$host:$port" STDOUT)
            fi
            ;;
    esac
}

# serve_command ARRAY PORT SHELL_COMMAND [duplex]: listens on PORT and runs SHELL_COMMAND (via
# sh -c) for each connection, sending its stdout to the peer; one connection at a time, so two
# recipients never run two backups on one donor at once. With `duplex` the command also reads
# the peer's input on its stdin (backup-agent.sh reads a request), and a few connections may
# be open at once: the backup Job asks one agent twice in a row (as a replica, then as the
# primary), faster than the listener reaps the first connection's process (a second
# connection is reset meanwhile, seen in tests); what keeps backups from overlapping there is
# the cluster lock the Job holds, not the listener.
serve_command() {
    local -n _serve_command=$1
    local port=$2 shell_serve_command=$3 duplex=${4:-} connections=1 tls=""
    [[ $duplex != duplex ]] || connections=4
    # TLS (with TLS_DIR) on the clone stream only: the backup agent's request channel is
    # plain, as the backup Job that asks it speaks plain TCP and its container mounts no TLS.
    [[ -z "${TLS_DIR:-}" || $duplex == duplex ]] || tls=yes
    case "$(transport_tool)" in
        ncat)
            _serve_command=(ncat --listen --keep-open)
            [[ $duplex == duplex ]] || _serve_command+=(--send-only)
            [[ -z $tls ]] || _serve_command+=(--ssl --ssl-cert "$TLS_DIR/tls.crt" --ssl-key "$TLS_DIR/tls.key")
            _serve_command+=("--max-conns=$connections" --sh-exec "$shell_serve_command" "$port")
            ;;
        socat)
            # -U: data flows only from the command to the peer; the peer's input is ignored.
            local listen="TCP-LISTEN:$port,reuseaddr,fork,max-children=$connections"
            if [[ -n $tls ]]; then
                # verify=0: the receivers hold no client certificate (peers only reach the port:
                # NetworkPolicy); what TLS proves here is the donor to the receiver.
                listen="OPENSSL-LISTEN:$port,reuseaddr,fork,max-children=$connections,cert=$TLS_DIR/tls.crt,key=$TLS_DIR/tls.key,verify=0"
            fi
            _serve_command=(socat)
            [[ $duplex == duplex ]] || _serve_command+=(-U)
            _serve_command+=("$listen" "SYSTEM:$shell_serve_command")
            ;;
    esac
}

# --- object-store backups (backup.sh, binlog-archive.sh, restore.sh) ------------------------------

# mysqlbackup_command ARRAY: the Python half of the backup path (the mysqlbackup package);
# MYSQLBACKUP_PYTHON names the interpreter that has it and boto3 (default python3).
mysqlbackup_command() {
    local -n _mysqlbackup_command=$1
    _mysqlbackup_command=("${MYSQLBACKUP_PYTHON:-python3}" -m mysqlbackup)
}

# compress_command ARRAY KIND / decompress_command ARRAY KIND: gzip (in every image), zstd
# (faster at the same ratio, where present) or none. KIND is recorded in the manifest, so a
# restore always decompresses with what the backup used.
compress_command() {
    local -n _compress_command=$1
    case "$2" in
        gzip) _compress_command=(gzip -1 -c) ;;
        zstd) _compress_command=(zstd -q -1 -T0 -c) ;;
        none) _compress_command=(cat) ;;
        *) die "BACKUP_COMPRESSION must be gzip, zstd or none, got '$2'" ;;
    esac
}

decompress_command() {
    local -n _decompress_command=$1
    case "$2" in
        gzip) _decompress_command=(gzip -d -c) ;;
        zstd) _decompress_command=(zstd -q -d -c) ;;
        none) _decompress_command=(cat) ;;
        *) die "the backup names compression '$2', which this script does not know" ;;
    esac
}
