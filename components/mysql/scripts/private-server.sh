#!/usr/bin/env bash
# private-server.sh: sourced, never run. A server only the calling script can reach, on a data
# dir that must be worked on before anyone else sees it: verify.sh's scratch restore, and the
# restore init step (restore-init.sh) replaying archived binlogs before the pod's own server
# starts. No TCP (--skip-networking): the socket lives in the caller's private directory, so
# no client, probe or replica can connect while the data is incomplete. Started and stopped
# by the PID started here, never by name.
#
#   private_server_start DIR DATA_DIR [OPTION...]   OPTIONs come first on the command line, so
#                                                   --no-defaults / --defaults-file work; sets
#                                                   private_server_socket
#   private_server_stop                             a clean shutdown (InnoDB flushed); fails
#                                                   when the server exits non-zero
#
# MARIADBD names the server binary (default mariadbd); SERVER_WAIT_SECONDS bounds the wait for
# its socket (crash recovery of a large restore may take minutes; default 600).

private_server_pid=""
private_server_socket=""
private_server_log=""

private_server_start() {
    local dir=$1 data=$2
    shift 2
    mkdir -p "$dir"
    chmod 0700 "$dir"
    private_server_socket="$dir/mysqld.sock"
    private_server_log="$dir/mysqld.err"
    "${MARIADBD:-mariadbd}" "$@" --datadir="$data" --socket="$private_server_socket" \
        --skip-networking --pid-file="$dir/mysqld.pid" --log-error="$private_server_log" \
        --user="$(id -un)" &
    private_server_pid=$!
    local wait=${SERVER_WAIT_SECONDS:-600}
    require_uint SERVER_WAIT_SECONDS "$wait"
    local deadline=$((SECONDS + wait))
    until [[ -S "$private_server_socket" ]]; do
        kill -0 "$private_server_pid" 2>/dev/null \
            || die "the private server exited: $(tail -n 5 "$private_server_log" 2>/dev/null | tr '\n' ' ')"
        ((SECONDS < deadline)) || die "the private server did not open its socket within ${wait}s"
        sleep 0.2
    done
}

# Safe to call twice, and from an EXIT trap after a failure.
private_server_stop() {
    [[ -n "$private_server_pid" ]] || return 0
    local pid=$private_server_pid status=0
    private_server_pid=""
    kill -0 "$pid" 2>/dev/null || { wait "$pid" || true; return 0; }
    kill -TERM "$pid"
    wait "$pid" || status=$?
    ((status == 0)) || die "the private server exited $status on shutdown: $(tail -n 5 "$private_server_log" 2>/dev/null | tr '\n' ' ')"
}
