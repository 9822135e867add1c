#!/usr/bin/env bash
# Builds the kube tool set into OUT_DIR/bin: kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, etcd + etcdctl 3.5 and our Go benchmark programs.
#
# Usage: tools/kube/build.sh OUT_DIR
# Idempotent: a binary already in OUT_DIR/bin is kept (scripts/build-tools.sh names
# OUT_DIR after a hash of this folder, so a changed pin gets a fresh OUT_DIR). Versions
# come from versions.env only; the -X flags make every binary report its real version
# instead of v0.0.0-master / "Not provided".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"

out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out/bin"
out=$(cd "$out" && pwd)

export GOFLAGS="-trimpath -mod=readonly -buildvcs=false"
export CGO_ENABLED=0

k8s_minor=${KUBERNETES_VERSION#v1.}
k8s_minor=${k8s_minor%%.*}
k8s_pkg=k8s.io/component-base/version
k8s_ldflags="-s -w -X ${k8s_pkg}.gitVersion=${KUBERNETES_VERSION} -X ${k8s_pkg}.gitMajor=1"
k8s_ldflags+=" -X ${k8s_pkg}.gitMinor=${k8s_minor} -X ${k8s_pkg}.gitTreeState=clean"
k8s_ldflags+=" -X ${k8s_pkg}/verflag.programName=kubernetes"
# kubectl prints client-go's copy of the version too.
k8s_ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=${KUBERNETES_VERSION}"
k8s_ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${k8s_minor}"
kwok_ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
kwok_ldflags+=" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION#v}"
# etcd's version is a constant in its api module; only the commit is a variable.
etcd_ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}"

build() {  # build MODULE_DIR NAME PACKAGE LDFLAGS
  local dir=$1 name=$2 package=$3 ldflags=$4
  if [[ -x $out/bin/$name ]]; then
    return 0
  fi
  echo "==> building $name ($package)"
  local started=$SECONDS
  # `go build -o` of a library writes an archive without complaint: insist on a command.
  if [[ $(cd "$dir" && go list -f '{{.Name}}' "$package") != main ]]; then
    echo "build.sh: $package is not a main package" >&2
    return 1
  fi
  # Build to a temporary name first: an interrupted build never leaves a binary that
  # looks finished.
  (cd "$dir" && go build -ldflags "$ldflags" -o "$out/bin/.$name.partial" "$package")
  mv "$out/bin/.$name.partial" "$out/bin/$name"
  echo "    $name: $((SECONDS - started)) s, $(du -k "$out/bin/$name" | cut -f1) KiB"
}

# etcd first: it is the smallest and the control plane cannot start without it. In 3.5 the
# etcd command is the server module's root package (the repository root is a library).
build "$here/etcd" etcd go.etcd.io/etcd/server/v3 "$etcd_ldflags"
build "$here/etcd" etcdctl go.etcd.io/etcd/etcdctl/v3 "$etcd_ldflags"
build "$here" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build "$here" kwok sigs.k8s.io/kwok/cmd/kwok "$kwok_ldflags"
build "$here" kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
build "$here" kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$k8s_ldflags"
build "$here" kubectl k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
for program in "$here"/cmd/*/; do
  [[ -d $program ]] || continue
  name=$(basename "$program")
  build "$here" "$name" "./cmd/$name" "-s -w"
done
