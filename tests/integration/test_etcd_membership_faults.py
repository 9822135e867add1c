"""EtcdMembership never ends an up unconverged, shows drift on refresh, refuses before writing.

Same stage as tests/integration/test_etcd_cluster.py (tests/support/etcd_pods.py): each
"pod" runs the StatefulSet's exact command line and scripts on 127.0.0.1, the provider
runs in the real provider server, and this test plays the StatefulSet controller and
the kubelet (including the exec readiness probe, run as the kubelet runs it).
"""

from __future__ import annotations

import base64
import subprocess
import urllib.request
from pathlib import Path

import pytest

from components.etcd._membership import DESIRED_MEMBERS_KEY
from components.etcd.cluster import METRICS_PORT
from tests.support.etcd import gateway
from tests.support.etcd_pods import (
    LocalStatefulSet,
    deployed,
    etcdctl_that_never_promotes,
    listed,
    membership_inputs,
    mount,
    voters,
    wait_voter,
)
from tests.support.procs import wait_until
from tests.support.provider_server import ProviderError

pytestmark = pytest.mark.integration



def readiness(pods: LocalStatefulSet, ordinal: int) -> subprocess.CompletedProcess[str]:
    """Run the pod's exec readiness probe in the container's environment."""
    probe = pods.template_container["readinessProbe"]["exec"]["command"]
    command = [str(pods.ports[ordinal].metrics) if w == str(METRICS_PORT)
               else mount(w, pods.volumes(ordinal)) for w in probe]
    _, env = pods.argv_env(ordinal)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30,
                          check=False)


def metrics(pods: LocalStatefulSet, ordinal: int) -> str:
    with urllib.request.urlopen(f"{pods.metrics_url(ordinal)}/metrics",  # noqa: S310
                                timeout=5) as response:
        return str(response.read().decode())


def by_hand(endpoint: str, path: str, body: dict[str, object]) -> None:
    """What an operator's etcdctl does; etcd refuses membership changes (503, "unhealthy
    cluster") until every voter has been connected for 5 s, and etcdctl retries."""
    wait_until(lambda: gateway(endpoint, path, body) or True, timeout=30,
               what=f"etcd to accept {path} {body}")


def test_a_learner_is_not_ready_and_a_stuck_learner_is_drift_that_up_repairs(
        statefulset: LocalStatefulSet, tmp_path: Path) -> None:
    pods = statefulset
    endpoint = pods.client_url(0)
    with deployed(pods, tmp_path) as driver:
        driver.up(membership_inputs(pods, 5))
        # etcd-3 runs but never promotes itself: a learner (on 3.4, healthy by /health).
        pods.start(3, overrides={"MEMBER_ETCDCTL": etcdctl_that_never_promotes(tmp_path)})
        wait_until(lambda: (listed(endpoint, pods.peer_url(3)) or {}).get("name") == "etcd-3",
                   timeout=30, what=f"etcd-3 to start as a learner\n{pods.log(3)}")
        assert (listed(endpoint, pods.peer_url(3)) or {}).get("isLearner")
        wait_until(lambda: "etcd_server_is_learner 1" in metrics(pods, 3), timeout=30,
                   what="etcd-3 to serve its metrics as a learner")
        # etcd 3.4 answers a learner's /health with "true" (the fault): the probe names
        # the learner; 3.5.17 fails the learner's /health itself. Either way: not Ready.
        probe = readiness(pods, 3)
        assert probe.returncode != 0, "a learner passed the readiness probe"
        assert ("this member is a learner" in probe.stderr
                or '"health":"false"' in probe.stderr), probe.stderr
        wait_until(lambda: readiness(pods, 0).returncode == 0, timeout=30,
                   what="voting member etcd-0 to pass its readiness probe")

        # Refresh reports the stuck learner and the missing etcd-4; preview shows an update.
        outputs = driver.refresh()
        drift = "\n".join(outputs.get("drift") or [])
        assert f"etcd-3 ({pods.peer_url(3)}) is a learner" in drift, outputs
        assert f"etcd-4 ({pods.peer_url(4)}) is not a member" in drift, outputs
        preview = driver.preview(membership_inputs(pods, 5))
        assert preview is not None
        assert preview.changes is True, "preview after refresh hid the membership drift"

        # up repairs it: the provider promotes etcd-3, etcd-4's pod joins, and the update
        # returns only once both vote.
        pods.start(4)
        result = driver.up(membership_inputs(pods, 5))
        assert result.operation == "update"
        assert result.outputs["drift"] == []
        assert voters(endpoint) == [f"etcd-{i}" for i in range(5)]
        # The leader's member list says etcd-3 votes; etcd-3 itself says so (the metric the
        # probe reads) once it has applied the promotion, and its /health read can time out
        # under load meanwhile: the kubelet probes again, and so does this, within the
        # provider's own timeout for convergence (not a delay of its own).
        timeout = membership_inputs(pods, 5)["timeout_seconds"]
        wait_until(lambda: readiness(pods, 3).returncode == 0, timeout=timeout,
                   what="etcd-3 to pass its readiness probe once promoted")
        driver.refresh()
        preview = driver.preview(membership_inputs(pods, 5))
        assert preview is not None
        assert preview.changes is False


def test_an_up_that_cannot_converge_fails_naming_the_member(
        statefulset: LocalStatefulSet, tmp_path: Path) -> None:
    pods = statefulset
    with deployed(pods, tmp_path) as driver:
        # A member removed by hand whose pod does not come back: the up fails naming it.
        member = listed(pods.client_url(0), pods.peer_url(2))
        assert member is not None
        by_hand(pods.client_url(0), "/v3/cluster/member/remove", {"ID": member["ID"]})
        pods.kill(2)
        driver.refresh()
        with pytest.raises(ProviderError, match=r"did not converge .*etcd-2 "):
            driver.up({**membership_inputs(pods, 3), "timeout_seconds": 3})


def test_a_member_removed_by_hand_is_drift_and_up_re_adds_it(
        statefulset: LocalStatefulSet, tmp_path: Path) -> None:
    pods = statefulset
    endpoint = pods.client_url(0)
    with deployed(pods, tmp_path) as driver:
        member = listed(endpoint, pods.peer_url(2))
        assert member is not None
        by_hand(endpoint, "/v3/cluster/member/remove", {"ID": member["ID"]})
        outputs = driver.refresh()
        assert f"etcd-2 ({pods.peer_url(2)}) is not a member" in " ".join(
            outputs.get("drift") or []), outputs
        preview = driver.preview(membership_inputs(pods, 3))
        assert preview is not None
        assert preview.changes is True, "preview after refresh hid a removed member"
        # The kubelet restarts the container of the removed member.
        pods.stop(2)
        pods.start(2)
        result = driver.up(membership_inputs(pods, 3))
        assert result.outputs["drift"] == []
        assert voters(endpoint) == ["etcd-0", "etcd-1", "etcd-2"]
        wait_voter(pods, 2)


def test_a_scale_down_refused_from_the_member_list_writes_nothing(
        statefulset: LocalStatefulSet, tmp_path: Path) -> None:
    pods = statefulset
    endpoint = pods.client_url(0)
    with deployed(pods, tmp_path) as driver:
        # A voting member added by hand that never started: 3 of 4 voters run.
        by_hand(endpoint, "/v3/cluster/member/add", {"peerURLs": [pods.peer_url(6)]})
        before = sorted(m["ID"] for m in gateway(endpoint, "/v3/cluster/member/list",
                                                 {})["members"])
        # 3 -> 1: removing etcd-2 alone would be fine, but then removing etcd-1 would
        # leave etcd-0 and the unstarted member, a quorum of two with one that votes.
        with pytest.raises(ProviderError, match=r"refusing to remove etcd-1: .*nothing was "
                                                r"changed"):
            driver.up({**membership_inputs(pods, 1), "timeout_seconds": 3})
    after = sorted(m["ID"] for m in gateway(endpoint, "/v3/cluster/member/list",
                                            {})["members"])
    assert after == before, "a refused scale-down removed a member"
    # Create wrote no desired list (the bootstrap needs none), and the refusal wrote none.
    key = base64.b64encode(DESIRED_MEMBERS_KEY.encode()).decode()
    assert not gateway(endpoint, "/v3/kv/range", {"key": key}).get("kvs"), (
        "a refused scale-down wrote the desired members")
