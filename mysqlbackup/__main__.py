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
from pathlib import Path

from mysqlbackup import catalog
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
        source_server_uuid=args.server_uuid or None)
    _store().put_json(catalog.manifest_key(args.id), manifest.to_json())
    print(json.dumps({"id": manifest.id, "gtid": manifest.gtid, "size": manifest.size}))


def cmd_list(_args: argparse.Namespace) -> None:
    listing = catalog.list_backups(_store())
    print(json.dumps({"complete": [m.to_json() for m in listing.complete],
                      "incomplete": listing.incomplete}, indent=1))


def cmd_retention(args: argparse.Namespace) -> None:
    if args.keep is None and args.max_age_seconds is None:
        raise SystemExit("retention: give --keep, --max-age-seconds or both")
    store = _store()
    listing = catalog.list_backups(store)
    max_age = None if args.max_age_seconds is None else dt.timedelta(seconds=args.max_age_seconds)
    doomed = catalog.retention(listing.complete, keep=args.keep, max_age=max_age,
                               now=catalog.utc_now())
    for manifest in doomed:
        # Manifest first: a backup half-deleted is then merely incomplete, never "complete"
        # with its data gone.
        store.delete([catalog.manifest_key(manifest.id)])
        store.delete([key for key, _ in store.objects(f"{catalog.BACKUPS}{manifest.id}/")])
        print(f"deleted backup {manifest.id} (ended {manifest.ended_at})", file=sys.stderr)
    print(json.dumps({"deleted": [m.id for m in doomed]}))


def _scan(path: Path) -> tuple[str, str, str | None, str | None]:
    output = subprocess.run(["mariadb-binlog", str(path)], capture_output=True, text=True,
                            check=False, env={**os.environ, "TZ": "UTC"})
    if output.returncode != 0:
        raise StoreError(f"mariadb-binlog {path} exited {output.returncode}: "
                         f"{output.stderr.strip()[-300:]}")
    first, last, first_at, last_at = catalog.scan_binlog_text(output.stdout)
    return catalog.format_gtid_list(first), catalog.format_gtid_list(last), first_at, last_at


def cmd_archive_binlogs(args: argparse.Namespace) -> None:
    """Uploads every closed binlog (all in the index but the last) not archived yet."""
    directory = Path(args.binlog_dir)
    index = directory / args.index
    names = [Path(line.strip()).name for line in index.read_text().splitlines() if line.strip()]
    closed = names[:-1]
    store = _store()
    prefix = f"{catalog.BINLOGS}{args.server_id}/"
    present = {key[len(prefix):] for key, _ in store.objects(prefix)}
    closed_at = catalog.iso(catalog.utc_now())
    archived = []
    for name in closed:
        if f"{name}.json" in present:
            continue
        path = directory / name
        first, last, first_at, last_at = _scan(path)
        with path.open("rb") as reader:
            size, sha256 = store.upload_stream(f"{prefix}{name}", reader)
        record = catalog.BinlogRecord(args.server_id, name, sha256, size, first, last,
                                      first_at, last_at, closed_at)
        store.put_json(f"{record.key}.json", record.to_json())
        archived.append({"file": name, "first": first, "last": last})
    print(json.dumps({"archived": archived}))


def cmd_plan(args: argparse.Namespace) -> None:
    store = _store()
    store.check()
    listing = catalog.list_backups(store)
    plan = catalog.make_plan(listing.complete, catalog.list_binlogs(store), backup=args.backup,
                             point=args.point or None, flavor=args.flavor,
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
    """An etcd snapshot file (``etcdctl snapshot save``), then its manifest."""
    store = _store()
    snapshot_id = args.id or catalog.new_backup_id()
    key = f"{catalog.ETCD}{snapshot_id}/snapshot.db"
    with Path(args.file).open("rb") as reader:
        size, sha256 = store.upload_stream(key, reader)
    manifest = catalog.SnapshotManifest(snapshot_id, size, sha256,
                                        catalog.iso(catalog.utc_now()), args.source)
    store.put_json(manifest.manifest_key, manifest.to_json())
    print(json.dumps(manifest.to_json()))


def cmd_fetch_snapshot(args: argparse.Namespace) -> None:
    store = _store()
    snapshot = catalog.choose_snapshot(catalog.list_snapshots(store), args.id)
    partial = Path(f"{args.out}.partial")
    with partial.open("wb") as writer:
        store.download_stream(snapshot.key, writer, snapshot.sha256)
    partial.rename(args.out)
    print(json.dumps(snapshot.to_json()))


def cmd_check(_args: argparse.Namespace) -> None:
    _store().check()


def cmd_create_bucket(_args: argparse.Namespace) -> None:
    _store().create_bucket()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m mysqlbackup", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    command = commands.add_parser("upload-data", help="stdin to the backup's data object")
    command.add_argument("--id", required=True)
    command.add_argument("--compression", required=True)
    command.set_defaults(run=cmd_upload_data)

    command = commands.add_parser("write-manifest", help="the manifest, after a clean upload")
    for name in ("--id", "--flavor", "--server-version", "--info", "--upload",
                 "--compression", "--started-at", "--host"):
        command.add_argument(name, required=True)
    command.add_argument("--server-id", required=True, type=int)
    command.add_argument("--server-uuid", default="")
    command.set_defaults(run=cmd_write_manifest)

    command = commands.add_parser("list", help="complete and incomplete backups, as JSON")
    command.set_defaults(run=cmd_list)

    command = commands.add_parser("retention", help="delete complete backups past the policy")
    command.add_argument("--keep", type=int)
    command.add_argument("--max-age-seconds", type=int)
    command.set_defaults(run=cmd_retention)

    command = commands.add_parser("archive-binlogs", help="upload closed binlogs")
    command.add_argument("--binlog-dir", required=True)
    command.add_argument("--index", default="mysql-bin.index")
    command.add_argument("--server-id", required=True, type=int)
    command.set_defaults(run=cmd_archive_binlogs)

    command = commands.add_parser("plan", help="choose backup and binlogs for a restore")
    command.add_argument("--backup", default="latest")
    command.add_argument("--point", default="")
    command.add_argument("--flavor", required=True)
    command.add_argument("--server-version", required=True)
    command.add_argument("--out", required=True)
    command.set_defaults(run=cmd_plan)

    command = commands.add_parser("fetch-backup", help="the plan's backup to stdout, verified")
    command.add_argument("--plan", required=True)
    command.set_defaults(run=cmd_fetch_backup)

    command = commands.add_parser("fetch-binlogs", help="the plan's binlogs, verified")
    command.add_argument("--plan", required=True)
    command.add_argument("--dir", required=True)
    command.set_defaults(run=cmd_fetch_binlogs)

    command = commands.add_parser("upload-snapshot", help="an etcd snapshot file, manifest last")
    command.add_argument("--file", required=True)
    command.add_argument("--id", default="")
    command.add_argument("--source", default="")
    command.set_defaults(run=cmd_upload_snapshot)

    command = commands.add_parser("fetch-snapshot", help="an etcd snapshot, verified, to a file")
    command.add_argument("--id", default="latest")
    command.add_argument("--out", required=True)
    command.set_defaults(run=cmd_fetch_snapshot)

    command = commands.add_parser("check", help="the bucket exists and answers")
    command.set_defaults(run=cmd_check)
    command = commands.add_parser("create-bucket", help="create the bucket (tests, first use)")
    command.set_defaults(run=cmd_create_bucket)
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
