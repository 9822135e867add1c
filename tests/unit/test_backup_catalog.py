"""The rules a restore trusts (mysqlbackup/catalog.py), on constructed manifests and records.

The integration tests (tests/integration/test_backup.py) prove the same rules end to end on a
real server and store; these pin the edge cases that are slow or awkward to stage there: gaps
at the start of the archive, several domains, retention's boundaries, a newer major.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from mysqlbackup import catalog
from mysqlbackup.catalog import BinlogRecord, Manifest, PlanError

T0 = dt.datetime(2026, 12, 3, 8, 0, 0, tzinfo=dt.UTC)


def manifest(backup_id: str, gtid: str, ended: dt.datetime, *, version: str = "10.11.19",
             flavor: str = "mariadb") -> Manifest:
    return Manifest(id=backup_id, flavor=flavor, server_version=version, gtid=gtid,
                    data_key=f"backups/{backup_id}/data.xbstream.gzip", compression="gzip",
                    size=1, sha256="0" * 64, started_at=catalog.iso(ended),
                    ended_at=catalog.iso(ended), source_host="h", source_server_id=1)


def record(name: str, first: str, last: str, at: dt.datetime) -> BinlogRecord:
    return BinlogRecord(server_id=1, file=name, sha256="0" * 64, size=1, first=first, last=last,
                        first_event_at=catalog.iso(at), last_event_at=catalog.iso(at),
                        closed_at=catalog.iso(at + dt.timedelta(seconds=1)))


def plan(backups: list[Manifest], binlogs: list[BinlogRecord], point: str | None,
         backup: str = "latest", version: str = "10.11.19") -> catalog.Plan:
    return catalog.make_plan(backups, binlogs, backup=backup, point=point, flavor="mariadb",
                             server_version=version)


def minutes(n: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


ARCHIVE = [record("b.1", "0-1-11", "0-1-20", minutes(1)),
           record("b.2", "0-1-21", "0-1-30", minutes(2)),
           record("b.3", "0-1-31", "0-1-40", minutes(3))]


def test_a_gtid_point_takes_every_binlog_from_the_backup_to_it() -> None:
    chosen = plan([manifest("a", "0-1-10", minutes(0))], ARCHIVE, "0-1-25")
    assert [r.file for r in chosen.binlogs] == ["b.1", "b.2"]
    assert (chosen.start_position, chosen.stop_position) == ("0-1-10", "0-1-25")


def test_a_gap_is_named_by_its_missing_gtids() -> None:
    with pytest.raises(PlanError, match=r"GTIDs 0-1-21 to 0-1-30 are in no archived binlog"):
        plan([manifest("a", "0-1-10", minutes(0))], [ARCHIVE[0], ARCHIVE[2]], "0-1-35")


def test_a_gap_right_after_the_backup_is_named_too() -> None:
    with pytest.raises(PlanError, match=r"GTIDs 0-1-6 to 0-1-10"):
        plan([manifest("a", "0-1-5", minutes(0))], ARCHIVE, "0-1-12")


def test_a_gap_after_the_point_does_not_matter() -> None:
    chosen = plan([manifest("a", "0-1-10", minutes(0))], [ARCHIVE[0], ARCHIVE[2]], "0-1-15")
    assert [r.file for r in chosen.binlogs] == ["b.1"]


def test_a_time_point_stops_at_the_binlog_that_starts_after_it() -> None:
    point = minutes(2) + dt.timedelta(seconds=30)
    chosen = plan([manifest("a", "0-1-10", minutes(0))], ARCHIVE, catalog.iso(point))
    assert [r.file for r in chosen.binlogs] == ["b.1", "b.2"]
    assert chosen.stop_datetime == "2026-12-03 08:02:30"


def test_the_newest_backup_before_the_point_is_chosen() -> None:
    backups = [manifest("a", "0-1-10", minutes(0)), manifest("b", "0-1-20", minutes(1)),
               manifest("c", "0-1-40", minutes(10))]
    chosen = plan(backups, ARCHIVE, "0-1-25")
    assert chosen.backup.id == "b"
    assert [r.file for r in chosen.binlogs] == ["b.2"]


def test_points_outside_what_is_kept_are_refused() -> None:
    backups = [manifest("a", "0-1-10", minutes(0))]
    with pytest.raises(PlanError, match="before the oldest usable backup"):
        plan(backups, ARCHIVE, catalog.iso(minutes(-1)))
    with pytest.raises(PlanError, match="after the newest archived binlog"):
        plan(backups, ARCHIVE, catalog.iso(minutes(60)))
    with pytest.raises(PlanError, match="after the newest archived binlog of domain 0"):
        plan(backups, ARCHIVE, "0-1-99")
    with pytest.raises(PlanError, match="before the oldest usable backup"):
        plan([manifest("a", "0-1-10", minutes(0))], ARCHIVE, "0-1-5")
    with pytest.raises(PlanError, match="expected RFC 3339 or a GTID"):
        plan(backups, ARCHIVE, "yesterday")


def test_another_flavor_or_a_newer_major_is_refused() -> None:
    with pytest.raises(PlanError, match=r"is from 11\.4\.5, newer than this server 10\.11\.19"):
        plan([manifest("a", "0-1-10", minutes(0), version="11.4.5")], [], None)
    with pytest.raises(PlanError, match="of flavor mysql"):
        plan([manifest("a", "0-1-10", minutes(0), flavor="mysql")], [], None)
    assert plan([manifest("a", "0-1-10", minutes(0), version="10.6.1")], [], None).backup.id == "a"


def test_a_named_backup_must_be_complete() -> None:
    with pytest.raises(PlanError, match="no complete backup 'x'"):
        plan([manifest("a", "0-1-10", minutes(0))], [], None, backup="x")
    with pytest.raises(PlanError, match="no complete backup"):
        plan([], [], None)


def test_each_domain_is_checked_on_its_own() -> None:
    archive = [record("b.1", "0-1-11,1-2-5", "0-1-12,1-2-6", minutes(1)),
               record("b.2", "1-2-9", "1-2-9", minutes(2))]
    with pytest.raises(PlanError, match=r"domain 1: GTIDs 1-2-7 to 1-2-8"):
        plan([manifest("a", "0-1-10,1-2-4", minutes(0))], archive, "0-1-12,1-2-9")


def test_retention_never_deletes_the_newest_and_counts_only_what_it_is_given() -> None:
    backups = [manifest(name, "0-1-1", minutes(i)) for i, name in enumerate("abcd")]
    now = minutes(100)
    assert [m.id for m in catalog.retention(backups, keep=2, max_age=None, now=now)] == ["b", "a"]
    assert [m.id for m in catalog.retention(backups, keep=None, max_age=dt.timedelta(0),
                                            now=now)] == ["c", "b", "a"]
    assert catalog.retention(backups[:1], keep=1, max_age=dt.timedelta(0), now=now) == []
    aged = catalog.retention(backups, keep=None, max_age=dt.timedelta(minutes=98.5), now=now)
    assert [m.id for m in aged] == ["b", "a"]
    with pytest.raises(ValueError, match="at least 1"):
        catalog.retention(backups, keep=0, max_age=None, now=now)


def test_binlog_text_is_read_for_its_gtid_range_and_times() -> None:
    text = ("#261203  8:36:46 server id 1  end_log_pos 285 CRC32 0x5c55c02c \tGtid list []\n"
            "#261203  8:36:46 server id 1  end_log_pos 1466 CRC32 0xcdfde8d7 \tGTID 0-1-6\n"
            "#261203  8:36:47 server id 1  end_log_pos 1587 CRC32 0xa916ca31 \tGTID 0-1-7 ddl\n")
    first, last, first_at, last_at = catalog.scan_binlog_text(text)
    assert (catalog.format_gtid_list(first), catalog.format_gtid_list(last)) == ("0-1-6", "0-1-7")
    assert (first_at, last_at) == ("2026-12-03T08:36:46Z", "2026-12-03T08:36:47Z")
    with pytest.raises(ValueError, match="jumps from 0-1-6 to 0-1-8"):
        catalog.scan_binlog_text(text.replace("GTID 0-1-7", "GTID 0-1-8"))


def test_one_manifest_per_slot_and_an_older_lock_token_is_fenced() -> None:
    first = dataclasses.replace(manifest("a", "0-1-1", minutes(0)), slot="backup-29400000",
                                fencing_token=7)
    by_hand = manifest("b", "0-1-2", minutes(1))  # no slot, no token: never in the way
    complete = [first, by_hand]
    assert catalog.slot_backup(complete, "backup-29400000") is first
    assert catalog.slot_backup(complete, "backup-29400060") is None
    # The slot is taken, whatever the token.
    refusal = catalog.manifest_refusal(complete, slot="backup-29400000", fencing_token=9)
    assert refusal is not None
    assert "already has the complete backup a" in refusal
    # A lapsed holder (token 5 < 7) of another slot finishing late: fenced.
    refusal = catalog.manifest_refusal(complete, slot="backup-29400060", fencing_token=5)
    assert refusal is not None
    assert "fenced" in refusal
    assert "token 7" in refusal
    # A newer holder, a new slot: written. By hand (no slot, no token): always written.
    assert catalog.manifest_refusal(complete, slot="backup-29400060", fencing_token=8) is None
    assert catalog.manifest_refusal(complete, slot=None, fencing_token=None) is None
    # Manifests written before slots existed still read.
    assert Manifest.from_json({k: v for k, v in first.to_json().items()
                               if k not in ("slot", "fencing_token")}).slot is None


def test_etcd_snapshot_retention_keeps_the_newest_complete_ones() -> None:
    snapshots = [catalog.SnapshotManifest(f"2026120{day}T000000Z-10", 10, "0" * 64,
                                          f"2026-12-0{day}T00:00:00Z", "db/etcd")
                 for day in (3, 1, 2)]
    doomed = catalog.retention(snapshots, keep=2, max_age=None,
                               now=catalog.parse_time("2026-12-04T00:00:00Z"))
    assert [s.id for s in doomed] == ["20261201T000000Z-10"]
    assert catalog.retention(snapshots[:1], keep=1, max_age=dt.timedelta(seconds=1),
                             now=catalog.parse_time("2027-01-01T00:00:00Z")) == []
