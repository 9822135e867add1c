#!/usr/bin/env bash
# Deploy one stack: `scripts/deploy.sh dev` or `scripts/deploy.sh prod`.
#
# Uses a local state backend unless PULUMI_BACKEND_URL says otherwise, creates the stack
# on first use, then runs `pulumi up --stack <stack>`. Extra arguments go to `pulumi up`
# (e.g. --yes, --diff). Pulumi installs requirements.txt into ./venv itself. Without a
# Python language host (the CLI built here), `up` runs through the Automation API and
# takes --yes, --diff and --expect-no-changes only.
set -euo pipefail
cd "$(dirname "$0")/.."

stack=${1:?usage: scripts/deploy.sh <stack: dev|prod> [pulumi up arguments...]}
shift
if [[ ! -f Pulumi.$stack.yaml ]]; then
  known=(Pulumi.*.yaml)
  known=("${known[@]#Pulumi.}")
  echo "error: no stack file Pulumi.$stack.yaml; known stacks: ${known[*]%.yaml}" >&2
  exit 2
fi
command -v pulumi >/dev/null || { echo "error: the pulumi CLI is not installed (https://www.pulumi.com/docs/install/)" >&2; exit 2; }
export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$HOME/.pulumi-state}
mkdir -p "$HOME/.pulumi-state"
# The local backend encrypts secrets with a passphrase; an empty one would leave them
# effectively unprotected, so refuse it.
if [[ -z ${PULUMI_CONFIG_PASSPHRASE:-} && -z ${PULUMI_CONFIG_PASSPHRASE_FILE:-} && $PULUMI_BACKEND_URL == file://* ]]; then
  echo "error: set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE): it encrypts this stack's secrets in local state" >&2
  exit 2
fi
if command -v pulumi-language-python >/dev/null; then
  pulumi stack select --create "$stack"
  exec pulumi up --stack "$stack" "$@"
fi
# A CLI built from source (tools/pulumi/build.sh) has no Python language host, so the same
# program runs through the Automation API instead (scripts/pulumi_inline.py; it creates the
# stack on first use too).
if [[ ! -x venv/bin/python ]]; then
  echo "error: no Python language host beside pulumi and no ./venv to run scripts/pulumi_inline.py (scripts/test.sh creates it)" >&2
  exit 2
fi
exec venv/bin/python -m scripts.pulumi_inline up "$stack" "$@"
