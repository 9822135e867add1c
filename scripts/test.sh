#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine and run every check and test.
#
# Idempotent: installs only what is missing, so a developer can run it again and again.
# Installs (as root, or through sudo): the real servers the integration tests start
# (MariaDB with mariadb-backup, etcd, ncat, socat), shellcheck, and a Python virtualenv
# ./venv with the pinned requirements (the same ./venv `pulumi up` uses).
# Arguments are passed to pytest, e.g. `scripts/test.sh tests/unit -k config`.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(mariadb-server mariadb-backup etcd-server etcd-client ncat socat shellcheck busybox-static openssl
              prometheus prometheus-mysqld-exporter libnss-wrapper
              python3-venv python3-dev maven unzip)

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "==> installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  # policy-rc.d or the lack of systemd keeps the packaged services from starting in
  # containers; on a full machine they may start, which the tests do not mind: every
  # test server runs on its own free port and data dir.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
fi

scripts/fetch-mariadb.sh

python=${PYTHON:-python3}
if [[ ! -x venv/bin/python ]]; then
  echo "==> creating ./venv with $($python --version)"
  "$python" -m venv venv
fi
# A stamp of the requirement files: reinstall only when they change.
stamp=venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "==> installing Python requirements into ./venv"
  venv/bin/python -m pip install -q --upgrade pip
  venv/bin/python -m pip install -q -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
# The project itself, editable, so that `distlock` and `components` import from any
# directory with venv/bin/python and no PYTHONPATH. Reinstalled only when pyproject.toml
# changes or the venv imports distlock from somewhere other than this tree.
project_stamp=venv/.project.sha256
want_project=$(sha256sum pyproject.toml | cut -d' ' -f1)
venv_python=$PWD/venv/bin/python
imported=$(cd / && "$venv_python" -c 'import distlock; print(distlock.__file__)' 2>/dev/null) \
  || imported=""
if [[ ! -f $project_stamp || $(cat "$project_stamp") != "$want_project" \
      || $imported != "$PWD/distlock/__init__.py" ]]; then
  echo "==> installing the project (editable) into ./venv"
  venv/bin/python -m pip install -q --no-deps -e .
  echo "$want_project" > "$project_stamp"
fi

# Checkov pins packaging and python-dateutil below what pulumi needs, so it gets a
# virtualenv of its own; tests/unit/test_policy.py runs its CLI from there.
if [[ ! -x .venv/policy/bin/checkov ]]; then
  echo "==> installing Checkov into .venv/policy"
  "$python" -m venv .venv/policy
  .venv/policy/bin/python -m pip install -q checkov==3.3.30
fi

scripts/build-tools.sh  # etcd 3.5, Kubernetes, kwok from tools/*/ (cached by source hash)
echo "==> ruff"
venv/bin/ruff check .
echo "==> mypy"
venv/bin/mypy .
echo "==> pytest"
venv/bin/pytest "$@"
