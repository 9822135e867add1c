# The backup agent image: the server image of the cluster's version (mariadb-backup, mbstream,
# mariadb-binlog, the client) plus Python and the pinned boto3 that `python -m mysqlbackup`
# needs (and prometheus-client for the backup gauges `archive-serve` serves, metrics.py), and
# the mysqlbackup package itself; distlock with its gRPC pins for the scheduled
# backup's Job, which holds the cluster lock (`python -m distlock run`). No published image has
# all of these.
#
# The component pins the tag by content (components/mysql/_backup.py, agent_image):
#   <server version>-<sha256 of this file, mysqlbackup/*.py and distlock/**/*.py>[:12]
# so a change to any of them is a new tag, never a re-pushed one. It must be built and pushed
# before a stack with mysql.backup.enabled is deployed (docs/backups.md):
#   docker build -f deploy/backup/agent.Dockerfile --build-arg BASE_IMAGE=mariadb:<version> \
#     -t <the image the component prints for images.backupAgent> .
ARG BASE_IMAGE=mariadb:10.11.10
FROM ${BASE_IMAGE}
ARG BOTO3_VERSION=1.44.5
ARG GRPCIO_VERSION=1.85.3
ARG PROTOBUF_VERSION=6.33.6
ARG PROMETHEUS_CLIENT_VERSION=0.26.0
# hadolint ignore=DL3008 (the base image's own Debian/Ubuntu archive decides the version)
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/mysqlbackup \
    && /opt/mysqlbackup/bin/pip install --no-cache-dir "boto3==${BOTO3_VERSION}" \
        "grpcio==${GRPCIO_VERSION}" "protobuf==${PROTOBUF_VERSION}" \
        "prometheus-client==${PROMETHEUS_CLIENT_VERSION}"
COPY mysqlbackup /opt/mysql-cluster/mysqlbackup
COPY distlock /opt/mysql-cluster/distlock
ENV PYTHONPATH=/opt/mysql-cluster \
    MYSQLBACKUP_PYTHON=/opt/mysqlbackup/bin/python
# The server image's mysql user (uid 999), as the pod's security context runs it.
USER 999:999
HEALTHCHECK NONE
