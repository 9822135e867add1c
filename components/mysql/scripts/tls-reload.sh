#!/usr/bin/env bash
# tls-reload.sh check|watch: the server's TLS files, checked and reloaded without a restart.
#
# TLS_DIR is the mounted Secret (cert-manager's Certificate Secret or any Secret with tls.crt,
# tls.key and ca.crt). The kubelet replaces a Secret volume's files in one atomic symlink swap
# (..data), so the three files always change together and a reader never sees half an update.
#
#   check  exits non-zero naming the problem: a missing or empty file, a certificate that has
#          expired, a key that does not match the certificate, a certificate the CA did not sign.
#          A server started with a broken pair may carry on without TLS (MariaDB logs the error
#          and disables SSL), so readiness runs this too.
#   watch  the sidecar loop: every TLS_RELOAD_INTERVAL seconds (default 10) it compares the
#          files' digest with the one last loaded; when they changed and check passes it tells
#          the server to reload them (MariaDB FLUSH SSL, MySQL ALTER INSTANCE RELOAD TLS), which
#          new connections use at once while existing ones keep theirs. When check fails it
#          logs why, keeps the server on the files it has, and records the reason in
#          RUN_DIR/tls-invalid (which readiness reports) until good files arrive.
#   alive  the sidecar's liveness probe: the watch loop touched its heartbeat file in
#          RUN_DIR within three intervals (plus slack for a slow reload).
# Root connects through the pod-local socket with a 0600 option file, as the other scripts do.
set -euo pipefail
shopt -s inherit_errexit
SCRIPT_NAME="tls-reload"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

reload_sql() {
    tls_reload_sql
}

check() {
    require_vars TLS_DIR
    local problem
    problem=$(tls_problem)
    [[ -z $problem ]] || die "TLS: $problem"
}

watch() {
    require_flavor
    require_vars TLS_DIR RUN_DIR
    read_secret ROOT_PASSWORD
    local interval options="$RUN_DIR/tls-reload-client.cnf"
    local invalid="$RUN_DIR/tls-invalid" loaded digest problem
    interval=$(tls_reload_interval)
    write_client_options "$options" root "$ROOT_PASSWORD" socket "$(server_socket)"
    unset ROOT_PASSWORD
    # Nothing counts as loaded yet: the server read the files when it started, which may be
    # before a rotation that happened while this container was starting, so the first pass
    # reloads whatever is there (a no-op for the server when nothing changed).
    loaded=""
    local pause=0
    while true; do
        : >"$(heartbeat_file)"
        sleep "$pause"
        pause=$interval
        tls_changed "$loaded" digest problem || continue
        if [[ -n $problem ]]; then
            # Logged once per new content, not on every pass.
            log "TLS: not reloading: $problem"
            # Atomically: readiness (and the tests) read it whenever it exists, and a
            # redirection creates it empty before the reason is written.
            write_marker "$invalid" "$problem"
            loaded=$digest
            continue
        fi
        if run_sql "$options" <<<"$(reload_sql)"; then
            rm -f -- "$invalid"
            loaded=$digest
            log "TLS: reloaded $(tls_certificate_summary)"
        else
            log "TLS: the server refused to reload; retrying"
        fi
    done
}

heartbeat_file() {
    require_vars RUN_DIR
    printf '%s\n' "$RUN_DIR/tls-reload.heartbeat"
}

alive() {
    local interval file touched now
    interval=$(tls_reload_interval)
    file=$(heartbeat_file)
    touched=$(stat -c %Y -- "$file" 2>/dev/null) || die "TLS watcher: no heartbeat yet ($file)"
    now=$(date +%s)
    ((now - touched <= 3 * interval + 30)) \
        || die "TLS watcher: last heartbeat $((now - touched)) s ago (interval ${interval} s)"
}

case "${1:-}" in
    check) check ;;
    watch) watch ;;
    alive) alive ;;
    *) die "usage: tls-reload.sh check|watch|alive" ;;
esac
