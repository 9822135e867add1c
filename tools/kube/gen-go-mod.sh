#!/usr/bin/env bash
# Writes go.mod's replace block from the Kubernetes release's own go.mod.
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at
# v0.0.0 and replaces them with ./staging/...; a dependency's replace directives are
# ignored, so this module must point each staging module the release requires at its
# published tag itself. Generating the list keeps it exact when the pin moves: run this
# after changing KUBERNETES_VERSION in versions.env, then `go mod tidy`, and commit both.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source-path=SCRIPTDIR source=versions.env
source ./versions.env

staging_tag=v0.${KUBERNETES_VERSION#v1.}
release_mod=$(go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[[ -f $release_mod ]] || { echo "gen-go-mod.sh: no go.mod for k8s.io/kubernetes@${KUBERNETES_VERSION}" >&2; exit 1; }

# Only staging modules the release actually requires are in our module graph; the
# others (sample-controller, sample-cli-plugin) are not all published at every tag.
mapfile -t staged < <(awk '/=> \.\/staging\// {print $1}' "$release_mod" | sort -u)
mapfile -t required < <(awk '/^require \(/ {r=1; next} r && /^\)/ {r=0} r {print $1} /^require [^(]/ {print $2}' \
  "$release_mod" | sort -u)
mapfile -t wanted < <(comm -12 <(printf '%s\n' "${staged[@]}") <(printf '%s\n' "${required[@]}"))
((${#wanted[@]})) || { echo "gen-go-mod.sh: found no staging modules in $release_mod" >&2; exit 1; }

edits=()
# Drop the previous list first so a staging module the new release no longer requires goes.
while read -r old; do
  edits+=("-dropreplace=$old")
done < <(awk '/^replace \(/ {r=1; next} r && /^\)/ {r=0} r && /=>/ {print $1} /^replace [^(]/ {print $2}' go.mod)
for module in "${wanted[@]}"; do
  edits+=("-replace=${module}=${module}@${staging_tag}")
done
go mod edit "${edits[@]}"
echo "gen-go-mod.sh: ${#wanted[@]} staging modules replaced at ${staging_tag}"
