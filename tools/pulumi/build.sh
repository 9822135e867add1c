#!/usr/bin/env bash
# Build the Pulumi toolchain into OUT_DIR/bin: `tools/pulumi/build.sh OUT_DIR`.
#
#   pulumi                          the CLI (github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
#   pulumi-resource-kubernetes      the Kubernetes provider plugin
#   pulumi-language-python-exec     scripts shipped in the sdk/v3 module; the engine runs
#   pulumi-resource-pulumi-python   the second one for every pulumi.dynamic provider
#
# Every program is built as a dependency of a module of ours, because `go install`
# refuses modules with replace directives. Two modules, because the two graphs cannot
# mix: the CLI's (go.mod here: pulumi/pkg/v3 v3.276.0) and the Kubernetes provider's
# (kubernetes/go.mod: it needs pulumi/pkg/v3 v3.215.0; against v3.276.0 it does not
# compile, codegen/schema having changed since). The versions live in those go.mod files
# alone; this script only names which release the provider's commit pseudo-version is,
# and checks that it is.
#
# No Python language host (pulumi-language-python) is built: its module
# (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) has no tags and the
# module proxy serves none of its versions. Programs run through the Automation API
# instead, whose inline programs serve their own language runtime (see README.md).
#
# Idempotent: every run rebuilds the same binaries in place from the module cache.
set -euo pipefail

# The commit tag v4.25.0 of pulumi/pulumi-kubernetes points at; go.mod must require the
# provider at that commit's pseudo-version. The only provider version the proxy serves.
readonly KUBERNETES_RELEASE=4.25.0
readonly KUBERNETES_COMMIT=f47bc2d6f199

readonly CLI_MODULE=github.com/pulumi/pulumi/pkg/v3
readonly SDK_MODULE=github.com/pulumi/pulumi/sdk/v3
readonly K8S_MODULE=github.com/pulumi/pulumi-kubernetes/provider/v4

if [[ $# -ne 1 || -z $1 ]]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
mkdir -p "$1/bin"
out=$(cd "$1" && pwd)/bin
cd "$(dirname "$0")"

export CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"

module_version() { go list -m -f '{{.Version}}' "$1"; }
module_dir() { go mod download -json "$1" >/dev/null && go list -m -f '{{.Dir}}' "$1"; }

cli_version=$(module_version "$CLI_MODULE")
sdk_version=$(module_version "$SDK_MODULE")
if [[ $cli_version != "$sdk_version" ]]; then
  echo "error: go.mod has $CLI_MODULE $cli_version but $SDK_MODULE $sdk_version; the CLI needs both at one version" >&2
  exit 1
fi
k8s_version=$(cd kubernetes && module_version "$K8S_MODULE")
if [[ $k8s_version != *-"$KUBERNETES_COMMIT" ]]; then
  echo "error: go.mod has $K8S_MODULE $k8s_version, not the commit $KUBERNETES_COMMIT of release $KUBERNETES_RELEASE named in $0" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "building pulumi $cli_version"
go build -ldflags "-s -w -X $SDK_MODULE/go/common/version.Version=$cli_version" \
  -o "$out/pulumi" "$CLI_MODULE/cmd/pulumi"

sdk_dir=$(module_dir "$SDK_MODULE")
install -m 0755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$out/"
install -m 0755 "$sdk_dir/python/dist/pulumi-resource-pulumi-python" "$out/"

# The provider embeds schema-embed.json and terraform-mapping-embed.json, which its
# `go generate` writes and its module zip therefore lacks. Generate them in a writable
# copy and build that copy in place of the module, through a temporary go.mod that
# differs from ours by that one replace directive (so versions still come from ours).
echo "building pulumi-resource-kubernetes $KUBERNETES_RELEASE ($k8s_version)"
cd kubernetes
cp -r "$(module_dir "$K8S_MODULE")" "$work/provider"
chmod -R u+w "$work/provider"
go build -o "$work/generate" "$work/provider/cmd/pulumi-resource-kubernetes/generate.go"
(cd "$work/provider/cmd/pulumi-resource-kubernetes" && VERSION=$KUBERNETES_RELEASE "$work/generate")
cp go.mod go.sum "$work/"
go mod edit -modfile="$work/go.mod" -replace "$K8S_MODULE=$work/provider"
go build -modfile="$work/go.mod" \
  -ldflags "-s -w -X $K8S_MODULE/pkg/version.Version=$KUBERNETES_RELEASE" \
  -o "$out/pulumi-resource-kubernetes" "$K8S_MODULE/cmd/pulumi-resource-kubernetes"
cd ..

ls -l "$out"
