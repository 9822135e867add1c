"""``python -m mysqlbackup COMMAND``: the steps of the backup path that are not shell.

The pod scripts (components/mysql/scripts/backup.sh, binlog-archive.sh, restore.sh) run the
server's own tools and pipe their output through these commands; everything that decides
what is trustworthy (catalog.py) or talks to the store (store.py) is here, once. Store
settings come from ``S3_*`` variables, its keys from the files they name (never argv, never
the environment). Every failure is one line on stderr naming what was wrong, exit code 1;
bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mysqlbackup import catalog, metrics, schedule
from mysqlbackup.store import Store, StoreConfig, StoreError


def _store() -> Store:
    return Store(StoreConfig.from_env())


def _gtid_from_info(path: Path) -> str:
    """The GTID position mariadb-backup recorded (xtrabackup_info's binlog_pos line)."""
    text = path.read_text()
    match = re.search(r"^binlog_pos = .*GTID of the last change '([^']*)'", text, re.MULTILINE)
    if not match:
        raise StoreError(f"{path} records no GTID position (binlog_pos); is the binary log on?")
    gtid = match.group(1).replace("\n", "").replace(" ", "")
    catalog.parse_gtid_list(gtid)
    return gtid


def cmd_upload_data(args: argparse.Namespace) -> None:
    key = catalog.data_key(args.id, args.compression)
    size, sha256 = _store().upload_stream(key, sys.stdin.buffer)
    json.dump({"data_key": key, "size": size, "sha256": sha256}, sys.stdout)
    print()


def cmd_write_manifest(args: argparse.Namespace) -> None:
    upload = json.loads(Path(args.upload).read_text())
    manifest = catalog.Manifest(
        id=args.id, flavor=args.flavor, server_version=args.server_version,
        gtid=_gtid_from_info(Path(args.info)), data_key=upload["data_key"],
        compression=args.compression, size=upload["size"], sha256=upload["sha256"],
        started_at=args.started_at, ended_at=catalog.iso(catalog.utc_now()),
        source_host=args.host, source_server_id=args.server_id,
        source_server_uuid=args.server_uuid or None, slot=args.slot or None,
        fencing_token=args.fencing_token)
    store = _store()
    if args.slot or args.fencing_token is not None:
        refusal = catalog.manifest_refusal(catalog.list_backups(store).complete,
                                           slot=manifest.slot,
                                           fencing_token=manifest.fencing_token)
        if refusal:
            raise StoreError(f"no manifest written for backup {args.id}: {refusal}")
    store.put_json(catalog.manifest_key(args.id), manifest.to_json())
    print(json.dumps({"id": manifest.id, "gtid": manifest.gtid, "size": manifest.size}))


def cmd_list(_args: argparse.Namespace) -> None:
    listing = catalog.list_backups(_store())
    print(json.dumps({"complete": [m.to_json() for m in listing.complete],
                      "incomplete": listing.incomplete}, indent=1))


def cmd_retention(args: argparse.Namespace) -> None:
    if args.keep is None and args.max_age_seconds is None:
        raise SystemExit("retention: give --keep, --max-age-seconds or both")
    print(json.dumps({"deleted": _apply_retention(_store(), args.keep, args.max_age_seconds)}))


def _apply_retention(store: Store, keep: int | None, max_age_seconds: int | None) -> list[str]:
    """Deletes the complete backups past the policy; returns their ids."""
    listing = catalog.list_backups(store)
    max_age = None if max_age_seconds is None else dt.timedelta(seconds=max_age_seconds)
    doomed = catalog.retention(listing.complete, keep=keep, max_age=max_age,
                               now=catalog.utc_now())
    for manifest in doomed:
        _delete_complete(store, catalog.manifest_key(manifest.id),
                         f"{catalog.BACKUPS}{manifest.id}/")
        print(f"deleted backup {manifest.id} (ended {manifest.ended_at})", file=sys.stderr)
    return [m.id for m in doomed]


def _delete_complete(store: Store, manifest_key: str, prefix: str) -> None:
    """Manifest first: a backup or snapshot half-deleted is then merely incomplete, never
    "complete" with its data gone."""
    store.delete([manifest_key])
    store.delete([key for key, _ in store.objects(prefix)])


def cmd_scheduled_backup(args: argparse.Namespace) -> None:
    """The CronJob's Job, under ``distlock run`` (mysqlbackup/schedule.py); then retention,
    which counts the new backup."""
    token = os.environ.get("DISTLOCK_TOKEN", "")
    if not token.isdigit():
        raise ValueError("DISTLOCK_TOKEN is unset: run this under `python -m distlock run`, "
                         "which holds the cluster lock and hands over its fencing token")
    store = _store()
    result = schedule.run(store, slot=args.slot, fencing_token=int(token),
                          peers=[schedule.Peer.parse(p) for p in args.peers.split(",") if p],
                          idle_timeout=args.idle_timeout)
    if not result.get("already") and (args.keep is not None or args.max_age_seconds is not None):
        result["deleted"] = _apply_retention(store, args.keep, args.max_age_seconds)
    print(json.dumps(result))


def _scan(path: Path) -> tuple[str, str, str | None, str | None]:
    output = subprocess.run(["mariadb-binlog", str(path)], capture_output=True, text=True,
                            check=False, env={**os.environ, "TZ": "UTC"})
    if output.returncode != 0:
        raise StoreError(f"mariadb-binlog {path} exited {output.returncode}: "
                         f"{output.stderr.strip()[-300:]}")
    first, last, first_at, last_at = catalog.scan_binlog_text(output.stdout)
    return catalog.format_gtid_list(first), catalog.format_gtid_list(last), first_at, last_at


def _archive_pass(store: Store, directory: Path, index: str,
                  server_id: int) -> list[dict[str, str]]:
    """Uploads every closed binlog (all in the index but the last) not archived yet."""
    names = [Path(line.strip()).name
             for line in (directory / index).read_text().splitlines() if line.strip()]
    prefix = f"{catalog.BINLOGS}{server_id}/"
    present = {key[len(prefix):] for key, _ in store.objects(prefix)}
    closed_at = catalog.iso(catalog.utc_now())
    archived = []
    for name in names[:-1]:
        if f"{name}.json" in present:
            continue
        path = directory / name
        first, last, first_at, last_at = _scan(path)
        with path.open("rb") as reader:
            size, sha256 = store.upload_stream(f"{prefix}{name}", reader)
        record = catalog.BinlogRecord(server_id, name, sha256, size, first, last,
                                      first_at, last_at, closed_at)
        store.put_json(f"{record.key}.json", record.to_json())
        archived.append({"file": name, "first": first, "last": last})
    return archived


def cmd_archive_binlogs(args: argparse.Namespace) -> None:
    archived = _archive_pass(_store(), Path(args.binlog_dir), args.index, args.server_id)
    print(json.dumps({"archived": archived}))


def _metrics_settings(args: argparse.Namespace) -> metrics.MetricsSettings | None:
    """The backup gauges' settings (metrics.py), or None without a port: metrics off."""
    if not args.metrics_port:
        return None
    if args.backup_interval_seconds is None:
        raise ValueError("--metrics-port needs --backup-interval-seconds "
                         "(BACKUP_INTERVAL_SECONDS), the gauge MySQLBackupTooOld compares with")
    return metrics.MetricsSettings(port=args.metrics_port,
                                   interval_seconds=args.backup_interval_seconds,
                                   refresh_seconds=args.catalog_refresh_seconds)


def cmd_archive_serve(args: argparse.Namespace) -> None:
    """One archive pass per ``pass`` line on stdin, one JSON line on stdout per pass, until
    EOF; an ``idle`` line (this pod is not the recorded primary) gets no answer.

    binlog-archive.sh keeps this process as its coprocess for the life of the loop: a pass
    then costs neither an interpreter start nor importing boto3 (about a second, several
    under load), so the upload follows the rotation at once and the recovery point stays
    within the interval. A failed pass answers ``{"error": ...}`` and the next line retries:
    the archive is idempotent (a binlog with a record is never uploaded again). With a
    metrics port it also serves the backup gauges (metrics.py), which is why it hears about
    the ticks it does not archive at.
    """
    settings = _metrics_settings(args)
    store = _store()
    directory = Path(args.binlog_dir)
    archive = metrics.ArchiveState()
    if settings is not None:
        metrics.serve(lambda: catalog.list_backups(store).complete, settings, archive,
                      newest_verification=lambda: catalog.newest_verification(store))
    for request in sys.stdin:
        if request.strip() == "idle":
            archive.idle()
            continue
        started = archive.pass_started()
        try:
            answer: dict[str, Any] = {
                "archived": _archive_pass(store, directory, args.index, args.server_id)}
            archive.pass_succeeded(started)
        except (StoreError, ValueError, OSError) as error:
            answer = {"error": str(error)}
        print(json.dumps(answer), flush=True)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None


def cmd_plan(args: argparse.Namespace) -> None:
    store = _store()
    store.check()
    listing = catalog.list_backups(store)
    archived = catalog.list_binlogs(store)
    # "end": everything archived, the point verification restores to.
    point = (catalog.archive_end(archived) or None) if args.point == "end" else args.point
    plan = catalog.make_plan(listing.complete, archived, backup=args.backup,
                             point=point or None, flavor=args.flavor,
                             server_version=args.server_version)
    Path(args.out).write_text(json.dumps(plan.to_json(), indent=1))
    print(json.dumps({"backup": plan.backup.id, "gtid": plan.backup.gtid,
                      "binlogs": [r.key for r in plan.binlogs]}))


def _plan(path: str) -> catalog.Plan:
    return catalog.Plan.from_json(json.loads(Path(path).read_text()))


def cmd_fetch_backup(args: argparse.Namespace) -> None:
    plan = _plan(args.plan)
    _store().download_stream(plan.backup.data_key, sys.stdout.buffer, plan.backup.sha256)


def cmd_fetch_binlogs(args: argparse.Namespace) -> None:
    plan = _plan(args.plan)
    store = _store()
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    for index, record in enumerate(plan.binlogs):
        # Numbered so that the shell's glob order is the plan's order.
        path = directory / f"{index:06d}-{record.server_id}-{record.file}"
        with path.open("wb") as writer:
            store.download_stream(record.key, writer, record.sha256)
        print(path)


def cmd_upload_snapshot(args: argparse.Namespace) -> None:
    """An etcd snapshot file (``etcdctl snapshot save``), then its manifest; with ``--keep``
    then only the newest complete ones are kept (the new one counts)."""
    store = _store()
    snapshot_id = args.id or catalog.new_backup_id()
    key = f"{catalog.ETCD}{snapshot_id}/snapshot.db"
    with Path(args.file).open("rb") as reader:
        size, sha256 = store.upload_stream(key, reader)
    manifest = catalog.SnapshotManifest(snapshot_id, size, sha256,
                                        catalog.iso(catalog.utc_now()), args.source)
    store.put_json(manifest.manifest_key, manifest.to_json())
    result: dict[str, Any] = manifest.to_json()
    if args.keep is not None:
        doomed = catalog.retention(catalog.list_snapshots(store), keep=args.keep, max_age=None,
                                   now=catalog.utc_now())
        for old in doomed:
            _delete_complete(store, old.manifest_key, f"{catalog.ETCD}{old.id}/")
            print(f"deleted etcd snapshot {old.id} (created {old.created_at})", file=sys.stderr)
        result["deleted"] = [old.id for old in doomed]
    print(json.dumps(result))


def cmd_fetch_snapshot(args: argparse.Namespace) -> None:
    store = _store()
    snapshot = catalog.choose_snapshot(catalog.list_snapshots(store), args.id)
    partial = Path(f"{args.out}.partial")
    try:
        with partial.open("wb") as writer:
            store.download_stream(snapshot.key, writer, snapshot.sha256)
    except BaseException:
        # Bytes that failed their checksum are never left where a restore could take them.
        partial.unlink(missing_ok=True)
        raise
    partial.rename(args.out)
    print(json.dumps(snapshot.to_json()))


def cmd_record_verification(args: argparse.Namespace) -> None:
    """The verification result, next to the backup it verified."""
    result = json.loads(Path(args.result).read_text())
    _store().put_json(catalog.verification_key(args.id),
                      {**result, "verified_at": catalog.iso(catalog.utc_now())})


def cmd_check(_args: argparse.Namespace) -> None:
    _store().check()


def cmd_create_bucket(_args: argparse.Namespace) -> None:
    _store().create_bucket()


_REQUIRED: dict[str, Any] = {"required": True}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m mysqlbackup", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    def add(name: str, run: Callable[[argparse.Namespace], None], text: str,
            *options: tuple[str, dict[str, Any]]) -> None:
        command = commands.add_parser(name, help=text)
        for flag, settings in options:
            command.add_argument(flag, **settings)
        command.set_defaults(run=run)

    add("upload-data", cmd_upload_data, "stdin to the backup's data object",
        ("--id", _REQUIRED), ("--compression", _REQUIRED))
    add("write-manifest", cmd_write_manifest, "the manifest, after a clean upload",
        *((flag, _REQUIRED) for flag in ("--id", "--flavor", "--server-version", "--info",
                                         "--upload", "--compression", "--started-at",
                                         "--host")),
        ("--server-id", {"required": True, "type": int}), ("--server-uuid", {"default": ""}),
        ("--slot", {"default": ""}), ("--fencing-token", {"type": int, "default": None}))
    add("list", cmd_list, "complete and incomplete backups, as JSON")
    add("retention", cmd_retention, "delete complete backups past the policy",
        ("--keep", {"type": int}), ("--max-age-seconds", {"type": int}))
    add("scheduled-backup", cmd_scheduled_backup,
        "one backup for a schedule slot, by a healthy replica's agent (under distlock run)",
        ("--slot", _REQUIRED), ("--peers", {"required": True, "help": "HOST:PORT,... of "
                                             "every pod's backup agent, ordinal order"}),
        ("--idle-timeout", {"type": float, "default": 300.0}),
        ("--keep", {"type": int}), ("--max-age-seconds", {"type": int}))
    add("archive-binlogs", cmd_archive_binlogs, "upload closed binlogs",
        ("--binlog-dir", _REQUIRED), ("--index", {"default": "mysql-bin.index"}),
        ("--server-id", {"required": True, "type": int}))
    add("archive-serve", cmd_archive_serve,
        "archive-binlogs once per line on stdin, a JSON line each, until EOF",
        ("--binlog-dir", _REQUIRED), ("--index", {"default": "mysql-bin.index"}),
        ("--server-id", {"required": True, "type": int}),
        ("--metrics-port", {"type": int, "default": _env_int("ARCHIVE_METRICS_PORT"),
                            "help": "serve the backup gauges here (default "
                                    "ARCHIVE_METRICS_PORT; unset: no metrics)"}),
        ("--backup-interval-seconds", {"type": int,
                                       "default": _env_int("BACKUP_INTERVAL_SECONDS")}),
        ("--catalog-refresh-seconds", {"type": int, "default": _env_int(
            "BACKUP_CATALOG_REFRESH_SECONDS") or 60, "help": "read the store's catalog at most "
            "this often (default BACKUP_CATALOG_REFRESH_SECONDS or 60)"}))
    add("plan", cmd_plan, "choose backup and binlogs for a restore",
        ("--backup", {"default": "latest"}),
        ("--point", {"default": "", "help": "RFC 3339, a GTID position, or end"}),
        ("--flavor", _REQUIRED), ("--server-version", _REQUIRED), ("--out", _REQUIRED))
    add("fetch-backup", cmd_fetch_backup, "the plan's backup to stdout, verified",
        ("--plan", _REQUIRED))
    add("fetch-binlogs", cmd_fetch_binlogs, "the plan's binlogs, verified",
        ("--plan", _REQUIRED), ("--dir", _REQUIRED))
    add("upload-snapshot", cmd_upload_snapshot, "an etcd snapshot file, manifest last",
        ("--file", _REQUIRED), ("--id", {"default": ""}), ("--source", {"default": ""}),
        ("--keep", {"type": int, "default": None,
                    "help": "then keep only the newest this many complete snapshots"}))
    add("fetch-snapshot", cmd_fetch_snapshot, "an etcd snapshot, verified, to a file",
        ("--id", {"default": "latest"}), ("--out", _REQUIRED))
    add("record-verification", cmd_record_verification, "store a verification result",
        ("--id", _REQUIRED), ("--result", _REQUIRED))
    add("check", cmd_check, "the bucket exists and answers")
    add("create-bucket", cmd_create_bucket, "create the bucket (tests, first use)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (StoreError, catalog.PlanError, ValueError, OSError) as error:
        print(f"mysqlbackup {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
