# The workspace image for the Pulumi Kubernetes Operator: what `pulumi up` of this
# program needs inside the cluster, and nothing it would have to fetch at run time.
#
# .github/workflows/workspace-image.yml builds it from the repository root whenever
# requirements.txt changes, tagged <CLI version>-<sha256(requirements.txt)[:12]>. By hand:
#   docker build -f deploy/operator/workspace.Dockerfile \
#     -t ghcr.io/<org>/mysql-cluster-workspace:3.272.0-$(sha256sum requirements.txt | cut -c1-12) .
# The workspace installs from the wheels baked here with PIP_NO_INDEX, so an image that
# does not match requirements.txt fails `pulumi install` loudly instead of pulling
# unpinned packages from the internet.
#
# Why not the operator's default pulumi/pulumi:*-nonroot: it is 2 GB of every language,
# and the program's Python dependencies (pymysql for ReplicationInit, kubernetes for the
# Lock CRD, requests for etcd) and the provider plugins would be downloaded again by
# every new workspace pod.
ARG PULUMI_VERSION=3.272.0
ARG PYTHON_VERSION=3.11

FROM pulumi/pulumi-python-${PYTHON_VERSION}:${PULUMI_VERSION} AS wheels
COPY requirements.txt /build/requirements.txt
RUN python -m pip wheel --no-cache-dir --wheel-dir /opt/wheels --requirement /build/requirements.txt

FROM pulumi/pulumi-python-${PYTHON_VERSION}:${PULUMI_VERSION}
# The operator's restricted profile runs the workspace as uid/gid 1000.
RUN groupadd --gid 1000 pulumi \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/pulumi pulumi
COPY --from=wheels /opt/wheels /opt/wheels
ENV HOME=/home/pulumi \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/opt/wheels \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PULUMI_SKIP_UPDATE_CHECK=true
USER 1000:1000
# Resource plugins at the versions requirements.txt pins (pulumi-kubernetes, pulumi-random).
RUN pulumi plugin install resource kubernetes v4.25.0 \
    && pulumi plugin install resource random v4.21.4
# Kubernetes probes the agent; a Docker HEALTHCHECK would never be used.
HEALTHCHECK NONE
