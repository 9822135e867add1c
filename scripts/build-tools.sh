#!/usr/bin/env bash
# Builds every Go tool set under tools/ (tools/<set>/build.sh OUT_DIR) into a cache keyed
# by its sources, then points ${MYSQL_CLUSTER_TOOLS}/bin/ at the current builds.
#
# Why a key per set: a cold Kubernetes build takes many minutes on 2 cores, so a set is
# rebuilt only when one of its tracked files or the Go toolchain changes. The key is the
# sha256 of the set's tracked files (path and content) plus `go version`; the build goes
# to <set>-<key12>/ and is trusted only once `.complete` exists there, which is written
# last, so an interrupted build is resumed, never used. Tests find the binaries through
# tests/support/tools.py, which looks only in ${MYSQL_CLUSTER_TOOLS}/bin/.
#
# Usage: scripts/build-tools.sh [SET...]   (default: every set)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tools_root=${MYSQL_CLUSTER_TOOLS:-$HOME/.cache/mysql-cluster/tools}

command -v go >/dev/null || { echo "build-tools.sh: go is not on PATH (Go 1.26 is needed)" >&2; exit 1; }
go_version=$(go version)

set_key() {  # set_key SET -> 12 hex digits
  local set=$1
  {
    # Tracked and new (not ignored) files, so an uncommitted edit changes the key too.
    git -C "$repo" ls-files --cached --others --exclude-standard -- "tools/$set" | LC_ALL=C sort \
      | while read -r file; do
          [[ -f $repo/$file ]] || continue
          printf '%s\n' "$file"
          sha256sum < "$repo/$file"
        done
    printf '%s\n' "$go_version"
  } | sha256sum | cut -c1-12
}

if (($#)); then
  sets=("$@")
else
  sets=()
  for script in "$repo"/tools/*/build.sh; do
    [[ -f $script ]] && sets+=("$(basename "$(dirname "$script")")")
  done
fi

mkdir -p "$tools_root/bin"
for set in "${sets[@]}"; do
  [[ -x $repo/tools/$set/build.sh ]] || { echo "build-tools.sh: no tools/$set/build.sh" >&2; exit 1; }
  out=$tools_root/$set-$(set_key "$set")
  if [[ -f $out/.complete ]]; then
    echo "==> tools/$set: up to date ($out)"
  else
    echo "==> tools/$set: building into $out"
    started=$SECONDS
    "$repo/tools/$set/build.sh" "$out"
    touch "$out/.complete"
    echo "==> tools/$set: built in $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s"
  fi
  for binary in "$out"/bin/*; do
    [[ -f $binary && -x $binary ]] || continue
    # ln -sfn replaces a link to an older key atomically enough for one user's cache.
    ln -sfn "$binary" "$tools_root/bin/$(basename "$binary")"
  done
done
