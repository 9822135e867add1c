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

# Go's module and build caches for these builds live beside the tools, not in the user's
# ~/go and ~/.cache/go-build: a cold build of every set fills them with several GiB that
# nothing reads once the binaries exist, and a CI machine's disk is shared with the tests'
# data dirs (a full disk failed a whole CI run). They are removed once every set is built;
# a failed build keeps them, so the next run resumes where it stopped.
# MYSQL_CLUSTER_KEEP_GO_CACHES=1 keeps them, e.g. to read a dependency's sources.
go_work=$tools_root/.go
export GOMODCACHE=$go_work/mod GOCACHE=$go_work/build
built=()

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
    built+=("$set")
    echo "==> tools/$set: built in $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s"
  fi
  for binary in "$out"/bin/*; do
    [[ -f $binary && -x $binary ]] || continue
    # ln -sfn replaces a link to an older key atomically enough for one user's cache.
    ln -sfn "$binary" "$tools_root/bin/$(basename "$binary")"
  done
done

if ((${#built[@]})) && [[ -d $go_work && ${MYSQL_CLUSTER_KEEP_GO_CACHES:-} != 1 ]]; then
  echo "==> removing this build's Go caches ($(du -sh "$go_work" | cut -f1)): every set is built"
  go clean -modcache  # the module cache is read-only; go knows how to remove it
  rm -rf "$go_work"
fi
