"""EtcdCluster for real: the StatefulSet's exact member command line on a local etcd cluster.

Each "pod" is started from the command, arguments and environment of the StatefulSet
rendered under mocks (:func:`tests.support.etcd_stack.render`), expanded the way the
kubelet expands ``$(VAR)``, with pod DNS names replaced by 127.0.0.1 ports. etcd is the
image's release (3.5, built by scripts/build-tools.sh), so every flag runs as deployed; only
paths differ from the pod, adapted in exactly one place, :func:`adapt_to_this_machine`:
where the etcd binaries and the busybox the pod copies in live. Membership changes go
through the real provider server (``python -m pulumi.dynamic``), as ``pulumi up`` drives
them, while this test plays the StatefulSet controller: it starts a pod only after the
provider returned, and stops one only after the provider removed it.
"""

from __future__ import annotations

import re
import shutil
import urllib.error
from pathlib import Path

import pytest

from components.etcd._bootstrap import EtcdBootstrapProvider
from components.etcd._membership import (
    DESIRED_MEMBERS_KEY,
    EtcdMembershipProvider,
    MembershipError,
    _Gateway,
)
from components.etcd.cluster import (
    SCRIPTS_DIR,
    SCRIPTS_MOUNT,
    SHELL_MOUNT,
)
from tests.support.etcd import etcdctl_binary, gateway
from tests.support.etcd_pods import (
    TYPE_NAME,
    LocalStatefulSet,
    Writer,
    adapt_to_this_machine,
    container_env,
    deployed,
    desired_members,
    etcdctl_that_never_promotes,
    listed,
    make_certificates,
    member_list,
    membership_inputs,
    mount,
    put,
    read_prefix,
    run_init_containers,
    start_initial,
    voters,
    wait_voter,
)
from tests.support.etcd_stack import DYNAMIC, render
from tests.support.procs import LOCALHOST, run, wait_until
from tests.support.provider_server import (
    ProviderError,
    ProviderServer,
    ResourceDriver,
)

pytestmark = pytest.mark.integration


def test_members_bootstrap_from_the_statefulset_command_line_and_survive_a_kill(
        statefulset: LocalStatefulSet, tmp_path: Path) -> None:
    pods = statefulset
    argv, env = pods.argv_env(1)
    assert f"--name={pods.pod(1)}" in argv
    assert f"--initial-advertise-peer-urls={pods.peer_url(1)}" in argv
    assert env["MEMBER_BOOTSTRAP_CLUSTER"].count(f"http://{LOCALHOST}:") == 3
    start_initial(pods)
    endpoint = pods.client_url(0)
    assert voters(endpoint) == ["etcd-0", "etcd-1", "etcd-2"]
    for i in range(20):
        put(pods.client_url(i % 3), f"k/{i:03d}", str(i))

    leader = next(o for o in range(3) if pods.members[o].is_leader())
    ids_before = {m["name"]: m["ID"] for m in member_list(endpoint)}
    pods.kill(leader)
    survivors = [o for o in range(3) if o != leader]
    # Two of three keep a quorum: writes resume once they elect a new leader.
    def write_after_kill() -> bool:
        put(pods.client_url(survivors[0]), "k/after-kill", "x")
        return True

    wait_until(write_after_kill, timeout=30, what="a write after the leader was killed")
    for i in range(20, 40):
        put(pods.client_url(survivors[i % 2]), f"k/{i:03d}", str(i))

    # Restarted on its data dir, the member rejoins under the same ID and catches up.
    pods.start(leader)
    pods.wait_healthy(leader)
    wait_until(lambda: len(read_prefix(pods.client_url(leader), "k/", serializable=True)) == 41,
               timeout=30, what="the restarted member to serve every key")
    assert {m["name"]: m["ID"] for m in member_list(endpoint)} == ids_before
    assert "restarting on the existing data dir" in pods.members[leader].process.log_tail(200)

    # The snapshot CronJob's script against the same cluster: three runs, two retained.
    job = render(replicas=3, snapshot={"retain": 2}).one("kubernetes:batch/v1:CronJob")
    job_pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    snapshots = tmp_path / "snapshots"
    volumes = {"/snapshots": snapshots, SHELL_MOUNT: tmp_path / "job-shell",
               SCRIPTS_MOUNT: SCRIPTS_DIR}
    for path in (snapshots, volumes[SHELL_MOUNT]):
        path.mkdir()
    run_init_containers(job_pod, volumes)
    (container,) = job_pod["containers"]
    job_env = {k: mount(v, volumes) for k, v in container_env(container, "snap-1").items()}
    # The client Service: any member.
    job_env["SNAPSHOT_ENDPOINT"] = endpoint
    command = adapt_to_this_machine([mount(w, volumes) for w in container["command"]], job_env)
    for _ in range(3):
        run(command, env=job_env, timeout=60)
    kept = sorted(p.name for p in snapshots.iterdir())
    assert len(kept) == 2, kept
    assert all(re.fullmatch(r"etcd-\d{8}T\d{6}Z-\d{2}\.db", name) for name in kept), kept
    status = run([etcdctl_binary(), "snapshot", "status", str(snapshots / kept[-1]), "-w", "json"])
    assert '"totalKey"' in status.stdout


def test_scale_3_to_5_to_3_in_one_up_each_loses_no_acknowledged_write(
        statefulset: LocalStatefulSet, tmp_path: Path) -> None:
    pods = statefulset
    start_initial(pods)
    endpoint = pods.client_url(0)
    writer = Writer([pods.client_url(o) for o in range(3)])
    with ProviderServer(log_path=tmp_path / "provider.log") as server:
        server.configure()
        driver = ResourceDriver(server, EtcdMembershipProvider(), type_name=TYPE_NAME,
                                name="locks-membership")
        created = driver.up(membership_inputs(pods, 3))
        assert created.operation == "create"
        bootstrap = created.outputs["bootstrap_cluster"]
        assert bootstrap == pods.argv_env(0)[1]["MEMBER_BOOTSTRAP_CLUSTER"]
        writer.start()

        # 3 -> 5 in one `pulumi up`. Before the StatefulSet grows, the provider has
        # recorded the five desired members and added etcd-3 as a learner; etcd-4 cannot
        # be added yet (etcd admits one learner at a time).
        before = writer.count()
        assert driver.up(membership_inputs(pods, 5)).operation == "update"
        assert desired_members(endpoint) == [pods.peer_url(o) for o in range(5)]
        learner = listed(endpoint, pods.peer_url(3))
        assert learner is not None
        assert learner.get("isLearner")
        assert listed(endpoint, pods.peer_url(4)) is None
        # The StatefulSet grows only after the provider returned, both pods at once
        # (Parallel): etcd-4 adds itself as soon as etcd-3 is promoted.
        pods.start(3)
        pods.start(4)
        wait_voter(pods, 3)
        wait_voter(pods, 4)
        assert voters(endpoint) == [f"etcd-{i}" for i in range(5)]
        assert "added this member as a learner" in pods.log(4)
        assert "added this member as a learner" not in pods.log(3)
        wait_until(lambda: writer.count() > before + 50, timeout=30,
                   what="writes to continue while two members joined")
        # The bootstrap list is recorded once: scaling never changes the pod template.
        assert driver.state is not None
        assert driver.state.outputs["bootstrap_cluster"] == bootstrap

        # 5 -> 3 in one `pulumi up`: highest ordinals removed before the StatefulSet shrinks.
        before = writer.count()
        assert driver.up(membership_inputs(pods, 3)).operation == "update"
        assert voters(endpoint) == ["etcd-0", "etcd-1", "etcd-2"]
        assert desired_members(endpoint) == [pods.peer_url(o) for o in range(3)]
        # Until the StatefulSet deletes it, the kubelet restarts a removed member's
        # container: on its old data, no longer desired, it waits instead of adding
        # itself back.
        pods.stop(4)
        pods.start(4)
        wait_until(lambda: "is not a desired member: waiting" in pods.log(4), timeout=30,
                   what=f"removed etcd-4 to wait\n{pods.log(4)}")
        assert listed(endpoint, pods.peer_url(4)) is None
        pods.stop(4)
        pods.stop(3)
        wait_until(lambda: writer.count() > before + 50, timeout=30,
                   what="writes to continue after the scale-down")

        # 3 -> 5 again with both old volumes still there (PVC retention "Retain", or a
        # cluster older than the retention policy): their data belongs to removed IDs.
        # etcd-3, added again by the provider, and etcd-4, adding itself, both keep the
        # old data aside (nothing is deleted) and join as new members.
        assert driver.up(membership_inputs(pods, 5)).operation == "update"
        pods.start(3)
        pods.start(4)
        wait_voter(pods, 3)
        wait_voter(pods, 4)
        assert "belongs to a removed incarnation" in pods.log(3)
        assert "is wanted again" in pods.log(4)
        for ordinal in (3, 4):
            assert list(pods.data_dir(ordinal).parent.glob("data.removed-*"))
        assert driver.up(membership_inputs(pods, 3)).operation == "update"
        pods.stop(4)
        pods.stop(3)
    writer.stop()
    assert writer.is_alive() is False

    stored = read_prefix(endpoint, "w/")
    lost = [key for key in writer.acknowledged if key not in stored]
    assert not lost, f"{len(lost)} acknowledged writes lost, first {lost[:5]}"
    assert len(writer.acknowledged) > 150


def _one_member_holding(pods: LocalStatefulSet, prefix: str) -> str:
    """Start etcd-0 alone, write 20 keys under ``prefix``; its client URL."""
    pods.start(0)
    pods.wait_healthy(0)
    endpoint = pods.client_url(0)
    for i in range(20):
        put(endpoint, f"{prefix}{i:03d}", str(i))
    return endpoint


def test_scale_1_to_3_in_one_up_from_the_dev_stack_size(tmp_path: Path) -> None:
    pods = LocalStatefulSet(tmp_path / "pods", render(replicas=1))
    try:
        endpoint = _one_member_holding(pods, "s/")
        with ProviderServer(log_path=tmp_path / "provider.log") as server:
            server.configure()
            driver = ResourceDriver(server, EtcdMembershipProvider(), type_name=TYPE_NAME,
                                    name="locks-membership")
            driver.up({**membership_inputs(pods, 1), "endpoints": [endpoint]})
            driver.up({**membership_inputs(pods, 3), "endpoints": [endpoint]})
        # etcd-1 was added by the provider; etcd-2 adds itself once etcd-1 is promoted
        # (which needs both of the then two voters: the single member alone never was
        # fault tolerant).
        pods.start(1)
        pods.start(2)
        wait_voter(pods, 1)
        wait_voter(pods, 2)
        assert voters(endpoint) == ["etcd-0", "etcd-1", "etcd-2"]
        assert "added this member as a learner" in pods.log(2)
        for ordinal in (1, 2):
            wait_until(lambda o=ordinal: len(read_prefix(pods.client_url(o), "s/",  # type: ignore[misc]
                                                         serializable=True)) == 20,
                       timeout=30, what=f"etcd-{ordinal} to hold every key")
    finally:
        pods.stop_all()


def _cluster_id(endpoint: str) -> str:
    return str(gateway(endpoint, "/v3/cluster/member/list", {})["header"]["cluster_id"])


def _answers(endpoint: str) -> bool:
    try:
        gateway(endpoint, "/v3/cluster/member/list", {}, timeout=1.0)
    except (OSError, ValueError):
        return False
    return True


def test_without_membership_a_scale_up_while_member_0_is_down_forms_no_second_cluster(
        tmp_path: Path) -> None:
    """membership.enabled false, 1 -> 3 while etcd-0 restarts: the new pods, started from
    the StatefulSet the recorded state renders, must not bootstrap a cluster of their own
    (two of the three, a quorum of a 3-member list, could). They wait; once etcd-0 is back
    they are still not members, and the documented manual scale-up then adds them."""
    off = {"enabled": False}
    with ProviderServer(log_path=tmp_path / "provider.log") as server:
        server.configure()
        driver = ResourceDriver(server, EtcdBootstrapProvider(), type_name=TYPE_NAME,
                                name="locks-bootstrap")
        created = driver.up(render(replicas=1, membership=off).one(DYNAMIC)).outputs
        scaled = driver.up(render(replicas=3, membership=off).one(DYNAMIC))
    assert scaled.operation == "update"
    first = render(replicas=1, membership=off, recorded=created)
    after = render(replicas=3, membership=off, recorded=scaled.outputs)
    assert after.statefulset["spec"]["replicas"] == 3
    # etcd-0 is not restarted by the scale-up, and the new pods run the same template.
    assert after.statefulset["spec"]["template"] == first.statefulset["spec"]["template"]

    pods = LocalStatefulSet(tmp_path / "pods", first)
    try:
        endpoint = _one_member_holding(pods, "b/")
        cluster = _cluster_id(endpoint)
        # The StatefulSet controller now creates pods (and restarts etcd-0) from the new
        # template, whatever it holds.
        pods.template_pod = after.statefulset["spec"]["template"]["spec"]
        pods.template_container = after.etcd_container
        # etcd-0 does not answer at the moment the new pods start (the node reboots).
        pods.stop(0)
        pods.start(1)
        pods.start(2)
        for ordinal in (1, 2):
            wait_until(lambda o=ordinal: any(  # type: ignore[misc]
                line in pods.log(o) for line in ("not an initial one: waiting", "bootstrapping")),
                timeout=60, what=f"etcd-{ordinal} to decide how it starts")
        for ordinal in (1, 2):
            assert "bootstrapping" not in pods.log(ordinal), pods.log(ordinal)
            assert not _answers(pods.client_url(ordinal)), pods.log(ordinal)
            assert not (pods.data_dir(ordinal) / "member").exists()

        pods.start(0)
        pods.wait_healthy(0)
        assert _cluster_id(endpoint) == cluster
        assert voters(endpoint) == ["etcd-0"]
        assert len(read_prefix(endpoint, "b/")) == 20
        for ordinal in (1, 2):
            wait_until(lambda o=ordinal: "not a member of the running cluster and not a "  # type: ignore[misc]
                       "desired one" in pods.log(o), timeout=60,
                       what=f"etcd-{ordinal} to find etcd-0 and keep waiting\n{pods.log(ordinal)}")
            assert not _answers(pods.client_url(ordinal))
        assert [m["name"] for m in member_list(endpoint)] == ["etcd-0"]

        # The manual scale-up docs/etcd.md describes: the new pods add themselves.
        put(endpoint, DESIRED_MEMBERS_KEY, ",".join(pods.peer_url(o) for o in range(3)))
        wait_voter(pods, 1)
        wait_voter(pods, 2)
        assert voters(endpoint) == ["etcd-0", "etcd-1", "etcd-2"]
        for ordinal in range(3):
            assert _cluster_id(pods.client_url(ordinal)) == cluster
        wait_until(lambda: len(read_prefix(pods.client_url(2), "b/", serializable=True)) == 20,
                   timeout=30, what="etcd-2 to hold every key")
    finally:
        pods.stop_all()


def test_new_members_whose_pods_never_run_do_not_block_the_next_ones(
        statefulset: LocalStatefulSet, tmp_path: Path) -> None:
    pods = statefulset
    start_initial(pods)
    endpoint = pods.client_url(0)
    stale = {"MEMBER_STALE_LEARNER_SECONDS": "3"}
    with ProviderServer(log_path=tmp_path / "provider.log") as server:
        server.configure()
        driver = ResourceDriver(server, EtcdMembershipProvider(), type_name=TYPE_NAME,
                                name="locks-membership")
        driver.up(membership_inputs(pods, 3))

        # 3 -> 5, and etcd-3's pod never starts (unschedulable, say): its learner holds
        # etcd's single slot. etcd-4 waits, says for whom, then removes the never-started
        # learner (no vote, no data: quorum is unaffected) and joins in its place.
        driver.up(membership_inputs(pods, 5))
        stuck = listed(endpoint, pods.peer_url(3))
        assert stuck is not None
        pods.start(4, overrides=stale)
        wait_voter(pods, 4)
        log = pods.log(4)
        stuck_id = format(int(stuck["ID"]), "x")  # etcdctl's spelling; the gateway's: decimal
        waiting = log.index(f"learner {pods.peer_url(3)} ({stuck_id}) was added but has not "
                            "started; it is removed if that lasts 3s")
        removing = log.index("was added but has not started for 3s: removing it")
        assert waiting < removing, log
        # When etcd-3's pod does start, it is desired but no longer a member: it adds itself.
        pods.start(3)
        wait_voter(pods, 3)
        assert "added this member as a learner" in pods.log(3)
        assert voters(endpoint) == [f"etcd-{i}" for i in range(5)]

        # 5 -> 7, and etcd-5's pod starts as a learner but dies before its promotion: a
        # started learner that no longer answers. etcd-6 waits, then takes the slot.
        driver.up(membership_inputs(pods, 7))
        pods.start(5, overrides={"MEMBER_ETCDCTL": etcdctl_that_never_promotes(tmp_path)})
        wait_until(lambda: (listed(endpoint, pods.peer_url(5)) or {}).get("name") == "etcd-5",
                   timeout=30, what=f"etcd-5 to start as a learner\n{pods.log(5)}")
        pods.kill(5)
        pods.start(6, overrides=stale)
        wait_voter(pods, 6)
        assert "has started before but does not answer for 3s: removing it" in pods.log(6)
        # Restarted, etcd-5 finds its data belongs to the removed ID: it keeps it aside
        # and adds itself back.
        pods.start(5)
        wait_voter(pods, 5)
        assert "is wanted again" in pods.log(5)
    assert voters(endpoint) == [f"etcd-{i}" for i in range(7)]
    pods.wait_healthy(*range(7))


def test_a_member_whose_data_dir_was_lost_is_removed_and_re_added(
        statefulset: LocalStatefulSet) -> None:
    pods = statefulset
    start_initial(pods)
    for i in range(30):
        put(pods.client_url(i % 3), f"d/{i:03d}", str(i))
    old_id = next(m["ID"] for m in member_list(pods.client_url(0)) if m.get("name") == "etcd-2")

    pods.stop(2)
    shutil.rmtree(pods.data_dir(2))
    pods.start(2)  # the same pod, the same command line, an empty volume

    def rejoined() -> bool:
        entry = next((m for m in member_list(pods.client_url(0))
                      if m["peerURLs"] == [pods.peer_url(2)]), None)
        return bool(entry and entry.get("name") == "etcd-2" and entry["ID"] != old_id
                    and not entry.get("isLearner"))

    wait_until(rejoined, timeout=60,
               what=f"etcd-2 to be re-added under a new ID\n{pods.members[2].process.log_tail()}")
    pods.wait_healthy(2)
    wait_until(lambda: len(read_prefix(pods.client_url(2), "d/", serializable=True)) == 30,
               timeout=30, what="the re-added member to hold every key")
    log = pods.members[2].process.log_tail(400)
    assert "removing it to re-add it" in log
    assert "promoted from learner to voting member" in log
    assert voters(pods.client_url(0)) == ["etcd-0", "etcd-1", "etcd-2"]


def test_a_removal_that_would_lose_quorum_is_refused_by_the_provider(
        statefulset: LocalStatefulSet, tmp_path: Path) -> None:
    pods = statefulset
    with deployed(pods, tmp_path) as driver:
        pods.kill(1)
        # 3 -> 1 starts by removing etcd-2, which leaves etcd-0 and the dead etcd-1: two
        # voters, whose quorum of two only etcd-0 could vote in. etcd refuses from its live
        # view; the provider says why.
        with pytest.raises(ProviderError, match=r"refusing to remove etcd-2: .* would not keep "
                                                r"a quorum"):
            driver.up({**membership_inputs(pods, 1), "timeout_seconds": 3})
    assert voters(pods.client_url(0)) == ["etcd-0", "etcd-1", "etcd-2"]
    assert driver.state is not None
    assert len(driver.state.outputs["members"]) == 3  # a failed update changes no state
    # Every member left in place stays desired (a lost data dir is still re-added).
    assert desired_members(pods.client_url(0)) == [pods.peer_url(o) for o in range(3)]
    put(pods.client_url(2), "still", "writable")


def test_tls_for_peers_clients_the_start_up_script_and_the_provider(tmp_path: Path) -> None:
    tls_files = make_certificates(tmp_path / "tls")
    config = {"tls": {"enabled": True, "peerSecret": "etcd-peer-tls",
                      "clientSecret": "etcd-client-tls"}}
    pods = LocalStatefulSet(tmp_path / "pods", render(replicas=3, **config),
                            tls_dir=tmp_path / "tls")
    try:
        client = _Gateway([pods.client_url(0)], timeout=5, tls=tls_files)
        start_initial(pods, lambda: sorted(m.name for m in client.members()
                                           if not m.is_learner))
        assert sorted(m.name for m in client.members()) == ["etcd-0", "etcd-1", "etcd-2"]
        # Client-certificate auth: plain HTTP and HTTPS without a certificate are refused.
        with pytest.raises((urllib.error.HTTPError, ConnectionError)):
            member_list(pods.client_url(0).replace("https://", "http://"))
        with pytest.raises(MembershipError, match="no etcd endpoint answered"):
            _Gateway([pods.client_url(0)], timeout=5,
                     tls={"ca_file": tls_files["ca_file"]}).members()

        with ProviderServer(log_path=tmp_path / "provider.log") as server:
            server.configure()
            driver = ResourceDriver(server, EtcdMembershipProvider(), type_name=TYPE_NAME,
                                    name="locks-membership")
            driver.up(membership_inputs(pods, 3, tls_files=tls_files, **config))
            driver.up(membership_inputs(pods, 5, tls_files=tls_files, **config))
        # Both join over TLS with the script's etcdctl (etcd-4 reads the desired members
        # and adds itself), then promote themselves.
        pods.start(3)
        pods.start(4)

        def promoted() -> bool:
            return sorted(m.name for m in client.members() if not m.is_learner) == [
                f"etcd-{i}" for i in range(5)]

        wait_until(promoted, timeout=60,
                   what=f"etcd-3 and etcd-4 to join over TLS\n{pods.log(3)}\n{pods.log(4)}")
        pods.wait_healthy(3, 4)
    finally:
        pods.stop_all()
