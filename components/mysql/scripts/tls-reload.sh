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
# Root connects through the pod-local socket with a 0600 option file, as the other scripts do.
set -euo pipefail
shopt -s inherit_errexit
SCRIPT_NAME=tls-reload
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

TLS_FILES=(tls.crt tls.key ca.crt)

# tls_problem: prints what is wrong with TLS_DIR's files, nothing when they are usable.
tls_problem() {
    local name path cert_key private_key
    for name in "${TLS_FILES[@]}"; do
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

tls_digest() {
    local name
    for name in "${TLS_FILES[@]}"; do
        cat -- "$TLS_DIR/$name" 2>/dev/null || true
    done | sha256sum | cut -d' ' -f1
}

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
    local interval=${TLS_RELOAD_INTERVAL:-10} options="$RUN_DIR/tls-reload-client.cnf"
    local invalid="$RUN_DIR/tls-invalid" loaded digest problem
    require_uint TLS_RELOAD_INTERVAL "$interval"
    write_client_options "$options" root "$ROOT_PASSWORD" socket "$(server_socket)"
    unset ROOT_PASSWORD
    # The server read the files at its start: that is what it has loaded.
    loaded=$(tls_digest)
    problem=$(tls_problem)
    if [[ -n $problem ]]; then
        log "TLS: $problem"
        printf '%s\n' "$problem" >"$invalid"
    fi
    while true; do
        sleep "$interval"
        digest=$(tls_digest)
        [[ $digest != "$loaded" ]] || continue
        problem=$(tls_problem)
        if [[ -n $problem ]]; then
            # Logged once per new content, not on every pass.
            log "TLS: not reloading: $problem"
            printf '%s\n' "$problem" >"$invalid"
            loaded=$digest
            continue
        fi
        if run_sql "$options" <<<"$(reload_sql)"; then
            rm -f -- "$invalid"
            loaded=$digest
            log "TLS: reloaded $(openssl x509 -in "$TLS_DIR/tls.crt" -noout -serial -enddate | tr '\n' ' ')"
        else
            log "TLS: the server refused to reload; retrying"
        fi
    done
}

case "${1:-}" in
    check) check ;;
    watch) watch ;;
    *) die "usage: tls-reload.sh check|watch" ;;
esac
