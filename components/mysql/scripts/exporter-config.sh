#!/usr/bin/env bash
# exporter-config.sh: init container `exporter-config` (metrics.enabled; see CONTRACT.md).
#
# The mysqld_exporter image is busybox with no bash, and the exporter takes its password from
# an option file or the environment; the environment is what the credentials files are there
# to avoid. So this init container (the server image, which has bash) writes the option file
# into EXPORTER_RUN_DIR, a memory emptyDir only it and the exporter mount, mode 0600 from the
# start. The exporter connects through the pod-local socket as the exporter account: the socket
# is open under requireSecureTransport and needs no certificate.
#
# go-ini, the exporter's parser, reads a backquoted value verbatim (no escapes, '#' kept), so
# the password is written in backquotes; a password holding a backquote or a newline cannot be
# written that way and is refused by name.
set -euo pipefail
SCRIPT_NAME=exporter-config
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${CONFIG_DIR:?CONFIG_DIR must name the ConfigMap mount}/lib.sh"

main() {
    require_flavor
    require_vars EXPORTER_USER EXPORTER_RUN_DIR
    read_secret EXPORTER_PASSWORD
    [[ $EXPORTER_PASSWORD != *'`'* && $EXPORTER_PASSWORD != *$'\n'* ]] \
        || die "EXPORTER_PASSWORD_FILE: the password holds a backquote or a newline, which the exporter's option file cannot carry"
    [[ $EXPORTER_USER =~ ^[A-Za-z0-9_]+$ ]] || die "EXPORTER_USER '$EXPORTER_USER' is not a plain account name"
    local path="$EXPORTER_RUN_DIR/exporter.cnf" tmp
    mkdir -p "$EXPORTER_RUN_DIR"
    tmp=$(umask 077 && mktemp "$path.XXXXXX")
    local quote='`'
    printf '[client]\nuser=%s\npassword=%s%s%s\nsocket=%s\n' \
        "$EXPORTER_USER" "$quote" "$EXPORTER_PASSWORD" "$quote" "$(server_socket)" >"$tmp"
    mv -f "$tmp" "$path"
    log "wrote $path for $EXPORTER_USER (socket $(server_socket))"
}

main "$@"
