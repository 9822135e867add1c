#!/usr/bin/env bash
# Builds SeaweedFS's `weed` into OUT_DIR/bin: the S3-compatible server the backup tests
# and bench/backup.py store backups in (`weed mini` / `weed server -s3` on 127.0.0.1).
#
# Usage: tools/seaweedfs/build.sh OUT_DIR
# Built as a dependency of this module (go.mod here) rather than with `go install`,
# because seaweedfs's own go.mod has a replace directive, which `go install` refuses; the
# one replace it needs is restated in our go.mod. The version is the pseudo-version in
# go.mod alone (the proxy serves no tagged release); the commit is stamped into
# `weed version`. Idempotent: a binary already in OUT_DIR/bin is kept
# (scripts/build-tools.sh names OUT_DIR after a hash of this folder).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
readonly MODULE=github.com/seaweedfs/seaweedfs

out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out/bin"
out=$(cd "$out" && pwd)
cd "$here"

export GOFLAGS="-trimpath -mod=readonly -buildvcs=false"
export CGO_ENABLED=0

if [[ -x $out/bin/weed ]]; then
  exit 0
fi
version=$(go list -m -f '{{.Version}}' "$MODULE")
commit=${version##*-}
echo "==> building weed ($MODULE $version)"
started=$SECONDS
# Build to a temporary name first: an interrupted build never leaves a binary that looks
# finished.
go build -ldflags "-s -w -X $MODULE/weed/util/version.COMMIT=$commit" \
  -o "$out/bin/.weed.partial" "$MODULE/weed"
mv "$out/bin/.weed.partial" "$out/bin/weed"
echo "    weed: $((SECONDS - started)) s, $(du -k "$out/bin/weed" | cut -f1) KiB"
