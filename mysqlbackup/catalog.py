"""What the store holds and what may be trusted: manifests, archived binlogs, plans, retention.

The rules that make a backup trustworthy live here, in one place, because every known
operator's worst failures were restores that looked fine and were not (PITR that skipped
binlogs, restores that dropped them, gaps nobody noticed):

- A backup is its data object plus ``manifest.json``, and the manifest is written last, after
  the data object's upload completed and its sha256 is known. A backup without a manifest is
  incomplete: it is never listed as restorable and never counted (or deleted) by retention.
- Each archived binlog is its object plus a ``.json`` record (written after the object) with
  its sha256 and the GTID range and times it holds. A restore plan takes every record from the
  backup's position to the target and fails, naming the missing GTIDs, when the ranges do not
  join up; it fails before anything is downloaded or any server is started.
- MariaDB GTIDs (domain-server-seq) only: seq numbers are contiguous per domain, which is what
  makes a gap detectable. MySQL's UUID:interval sets are not handled here yet.

Layout under the store's prefix::

    backups/<id>/data.xbstream.<compression>   the stream, as uploaded
    backups/<id>/manifest.json                 written last
    binlogs/<server_id>/<file>                 a closed binary log, as the server wrote it
    binlogs/<server_id>/<file>.json            its record, written after it
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

from mysqlbackup.store import Store

MANIFEST_FORMAT = 1
BACKUPS = "backups/"
BINLOGS = "binlogs/"

_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


class PlanError(Exception):
    """The requested restore cannot be done faithfully; the message says why."""


# --- GTIDs ---------------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Gtid:
    domain: int
    server_id: int
    seq: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.server_id}-{self.seq}"


def parse_gtid_list(text: str) -> dict[int, Gtid]:
    """A MariaDB GTID position (``0-1-5,1-2-9``): the last GTID of each domain."""
    position: dict[int, Gtid] = {}
    for element in filter(None, (part.strip() for part in text.split(","))):
        match = _GTID.match(element)
        if not match:
            raise ValueError(f"{element!r} is not a MariaDB GTID (domain-server-seq)")
        gtid = Gtid(*(int(group) for group in match.groups()))
        if gtid.domain in position:
            raise ValueError(f"{text!r} names domain {gtid.domain} twice")
        position[gtid.domain] = gtid
    return position


def format_gtid_list(position: Mapping[int, Gtid]) -> str:
    return ",".join(str(position[domain]) for domain in sorted(position))


def is_gtid_list(text: str) -> bool:
    try:
        return bool(parse_gtid_list(text))
    except ValueError:
        return False


def covers(position: Mapping[int, Gtid], target: Mapping[int, Gtid]) -> bool:
    """Every transaction up to ``target`` is within ``position``."""
    return all(domain in position and position[domain].seq >= gtid.seq
               for domain, gtid in target.items())


# --- times ---------------------------------------------------------------------------------------

def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> dt.datetime:
    """RFC 3339 with a zone (``2026-12-03T08:00:00Z``, ``...+01:00``)."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (write Z or +HH:MM)")
    return moment.astimezone(dt.UTC)


def new_backup_id(now: dt.datetime | None = None) -> str:
    """Sortable by time; the random tail keeps two backups in one second apart."""
    return f"{(now or utc_now()):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


# --- manifests -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Manifest:
    id: str
    flavor: str
    server_version: str
    gtid: str
    data_key: str
    compression: str
    size: int
    sha256: str
    started_at: str
    ended_at: str
    source_host: str
    source_server_id: int
    # MySQL's @@server_uuid; MariaDB has no such variable, so it records its server_id alone.
    source_server_uuid: str | None = None
    # A scheduled backup's slot (the CronJob's Job name) and the fencing token of the cluster
    # lock it ran under (mysqlbackup/schedule.py); None for a backup run by hand.
    slot: str | None = None
    fencing_token: int | None = None
    format: int = MANIFEST_FORMAT
    verification: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(document: Mapping[str, Any]) -> Manifest:
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"manifest format {document.get('format')!r}; "
                             f"this code reads {MANIFEST_FORMAT}")
        known = set(Manifest.__dataclass_fields__)
        return Manifest(**{k: v for k, v in document.items() if k in known})

    @property
    def ended(self) -> dt.datetime:
        return parse_time(self.ended_at)

    @property
    def position(self) -> dict[int, Gtid]:
        return parse_gtid_list(self.gtid)


def manifest_key(backup_id: str) -> str:
    return f"{BACKUPS}{backup_id}/manifest.json"


def data_key(backup_id: str, compression: str) -> str:
    return f"{BACKUPS}{backup_id}/data.xbstream.{compression}"


@dataclass(frozen=True)
class Listing:
    complete: list[Manifest]  # oldest first
    incomplete: list[str]  # ids that have objects but no manifest


def list_backups(store: Store) -> Listing:
    ids: dict[str, set[str]] = {}
    for key, _size in store.objects(BACKUPS):
        backup_id, _, name = key[len(BACKUPS):].partition("/")
        ids.setdefault(backup_id, set()).add(name)
    complete, incomplete = [], []
    for backup_id in sorted(ids):
        if "manifest.json" in ids[backup_id]:
            complete.append(Manifest.from_json(store.get_json(manifest_key(backup_id))))
        else:
            incomplete.append(backup_id)
    complete.sort(key=lambda manifest: (manifest.ended, manifest.id))
    return Listing(complete, incomplete)


def verification_key(backup_id: str) -> str:
    """Where verify.sh records what restoring the backup showed (record-verification)."""
    return f"{BACKUPS}{backup_id}/verification.json"


@dataclass(frozen=True)
class Verification:
    backup_id: str
    ok: bool
    verified_at: str

    @property
    def verified(self) -> dt.datetime:
        return parse_time(self.verified_at)


def newest_verification(store: Store) -> Verification | None:
    """The recorded verification of the newest backup that has one (ids sort by time): what
    the scheduled verification, which always takes the newest backup, last found."""
    verified = sorted(key[len(BACKUPS):].partition("/")[0] for key, _size in
                      store.objects(BACKUPS) if key.endswith("/verification.json"))
    if not verified:
        return None
    document = store.get_json(verification_key(verified[-1]))
    return Verification(verified[-1], document.get("ok") is True,
                        str(document.get("verified_at", "")))


def slot_backup(complete: list[Manifest], slot: str) -> Manifest | None:
    """The complete backup of a schedule's slot, if one was written."""
    return next((manifest for manifest in complete if manifest.slot == slot), None)


def manifest_refusal(complete: list[Manifest], *, slot: str | None,
                     fencing_token: int | None) -> str | None:
    """Why a manifest for ``slot`` written under ``fencing_token`` must not be written (None:
    it may). One complete backup per slot; and fencing: a holder whose lock lapsed (its lease
    expired while it still ran) carries an older token than any holder after it, so once a
    manifest with a newer token exists, the older holder's manifest is refused. The store
    offers no compare-and-set, so this is checked right before the write; the lock keeps two
    live holders from ever reaching this point at once."""
    if slot is not None and (done := slot_backup(complete, slot)) is not None:
        return f"slot {slot!r} already has the complete backup {done.id}"
    if fencing_token is not None:
        newer = [m for m in complete
                 if m.fencing_token is not None and m.fencing_token > fencing_token]
        if newer:
            return (f"fenced: backup {newer[-1].id} was written under lock token "
                    f"{newer[-1].fencing_token}, newer than this backup's {fencing_token}: "
                    "this backup's lock lapsed while it ran")
    return None


class _Complete(Protocol):
    """What retention reads of a complete backup or etcd snapshot."""

    @property
    def id(self) -> str: ...

    @property
    def ended(self) -> dt.datetime: ...


CompleteT = TypeVar("CompleteT", bound=_Complete)


def retention(complete: list[CompleteT], *, keep: int | None, max_age: dt.timedelta | None,
              now: dt.datetime) -> list[CompleteT]:
    """The complete backups (or etcd snapshots) a policy deletes: beyond the newest ``keep``,
    or older than ``max_age``; never the newest complete one, and never an incomplete one
    (not passed in)."""
    if keep is not None and keep < 1:
        raise ValueError(f"retention keep must be at least 1, got {keep}")
    newest_first = sorted(complete, key=lambda m: (m.ended, m.id), reverse=True)
    doomed = []
    for index, manifest in enumerate(newest_first):
        if index == 0:
            continue
        too_many = keep is not None and index >= keep
        too_old = max_age is not None and now - manifest.ended > max_age
        if too_many or too_old:
            doomed.append(manifest)
    return doomed


# --- archived binlogs ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BinlogRecord:
    server_id: int
    file: str
    sha256: str
    size: int
    # First and last GTID of each domain in the file ("" when it holds no transaction).
    first: str
    last: str
    first_event_at: str | None
    last_event_at: str | None
    # When the archiver saw the file closed: nothing before this instant is missing from it.
    closed_at: str

    @property
    def key(self) -> str:
        return f"{BINLOGS}{self.server_id}/{self.file}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(document: Mapping[str, Any]) -> BinlogRecord:
        known = set(BinlogRecord.__dataclass_fields__)
        return BinlogRecord(**{k: v for k, v in document.items() if k in known})


def list_binlogs(store: Store) -> list[BinlogRecord]:
    """Every archived binlog whose record exists (an object without one is not trusted)."""
    keys = {key for key, _ in store.objects(BINLOGS)}
    records = [BinlogRecord.from_json(store.get_json(key)) for key in sorted(keys)
               if key.endswith(".json") and key[:-len(".json")] in keys]
    return sorted(records, key=lambda r: (r.closed_at, r.server_id, r.file))


_EVENT = re.compile(r"^#(\d{6})\s+(\d{1,2}:\d{2}:\d{2}) server id (\d+)\s+end_log_pos \d+.*?"
                    r"\tGTID (\d+-\d+-\d+)")


def scan_binlog_text(text: str) -> tuple[dict[int, Gtid], dict[int, Gtid], str | None, str | None]:
    """From ``mariadb-binlog`` output (run with TZ=UTC): first and last GTID per domain, and
    the first and last transaction times."""
    first: dict[int, Gtid] = {}
    last: dict[int, Gtid] = {}
    first_at = last_at = None
    for line in text.splitlines():
        match = _EVENT.match(line)
        if not match:
            continue
        day, clock, _server, gtid_text = match.groups()
        (gtid,) = parse_gtid_list(gtid_text).values()
        moment = dt.datetime.strptime(f"{day} {clock}", "%y%m%d %H:%M:%S").replace(tzinfo=dt.UTC)
        first.setdefault(gtid.domain, gtid)
        previous = last.get(gtid.domain)
        if previous is not None and gtid.seq != previous.seq + 1:
            raise ValueError(f"binlog jumps from {previous} to {gtid} within one file")
        last[gtid.domain] = gtid
        first_at = first_at or iso(moment)
        last_at = iso(moment)
    return first, last, first_at, last_at


def archive_end(archived: Iterable[BinlogRecord]) -> str:
    """The newest archived GTID of each domain: what the archive promises a restore reaches."""
    end: dict[int, Gtid] = {}
    for record in archived:
        for domain, gtid in parse_gtid_list(record.last).items():
            if domain not in end or gtid.seq > end[domain].seq:
                end[domain] = gtid
    return format_gtid_list(end)


# --- restore plans -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    backup: Manifest
    binlogs: list[BinlogRecord]
    # mariadb-binlog bounds: start after the backup's position; stop at a GTID or a time.
    start_position: str
    stop_position: str | None
    stop_datetime: str | None

    def to_json(self) -> dict[str, Any]:
        return {"backup": self.backup.to_json(),
                "binlogs": [record.to_json() for record in self.binlogs],
                "start_position": self.start_position, "stop_position": self.stop_position,
                "stop_datetime": self.stop_datetime}

    @staticmethod
    def from_json(document: Mapping[str, Any]) -> Plan:
        return Plan(Manifest.from_json(document["backup"]),
                    [BinlogRecord.from_json(r) for r in document["binlogs"]],
                    document["start_position"], document["stop_position"],
                    document["stop_datetime"])


def _major(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise PlanError(f"cannot read a version from {version!r}")
    return int(match.group(1)), int(match.group(2))


def _target(point: str | None) -> tuple[dt.datetime | None, dict[int, Gtid] | None]:
    if not point:
        return None, None
    if is_gtid_list(point):
        return None, parse_gtid_list(point)
    try:
        return parse_time(point), None
    except ValueError as error:
        raise PlanError(f"pointInTime: {error}; expected RFC 3339 or a GTID position such "
                        "as 0-1-42") from None


def make_plan(complete: list[Manifest], archived: Iterable[BinlogRecord], *, backup: str,
              point: str | None, flavor: str, server_version: str) -> Plan:
    """Chooses the backup and the binlogs for ``backup`` (an id or ``latest``) and ``point``
    (RFC 3339, a GTID position, or None for the backup itself), or fails saying why."""
    if not complete:
        raise PlanError("the store holds no complete backup (one with a manifest)")
    target_time, target_gtid = _target(point)
    candidates = complete
    if backup != "latest":
        candidates = [m for m in complete if m.id == backup]
        if not candidates:
            raise PlanError(f"no complete backup {backup!r}; complete ones: "
                            f"{', '.join(m.id for m in complete)}")
    if target_time is not None:
        usable = [m for m in candidates if m.ended <= target_time]
        if not usable:
            raise PlanError(f"pointInTime {iso(target_time)} is before the oldest usable "
                            f"backup (ended {candidates[0].ended_at})")
    elif target_gtid is not None:
        usable = [m for m in candidates if covers(target_gtid, m.position)]
        if not usable:
            raise PlanError(f"pointInTime {point} is before the oldest usable backup "
                            f"(at {candidates[0].gtid})")
    else:
        usable = candidates
    chosen = usable[-1]
    if chosen.flavor != flavor:
        raise PlanError(f"backup {chosen.id} is of flavor {chosen.flavor}, this cluster is "
                        f"{flavor}")
    if _major(chosen.server_version) > _major(server_version):
        raise PlanError(f"backup {chosen.id} is from {chosen.server_version}, newer than this "
                        f"server {server_version}: a server cannot open a newer major's files")
    binlogs = _binlogs_after(chosen, list(archived), target_time, target_gtid)
    stop_datetime = None
    if target_time is not None:
        stop_datetime = f"{target_time:%Y-%m-%d %H:%M:%S}"
    return Plan(chosen, binlogs, chosen.gtid, format_gtid_list(target_gtid)
                if target_gtid else None, stop_datetime)


def _binlogs_after(backup: Manifest, archived: list[BinlogRecord],
                   target_time: dt.datetime | None,
                   target_gtid: dict[int, Gtid] | None) -> list[BinlogRecord]:
    if target_time is None and target_gtid is None:
        return []
    position = dict(backup.position)
    wanted: dict[str, BinlogRecord] = {}
    with_gtids = [(r, parse_gtid_list(r.first), parse_gtid_list(r.last)) for r in archived]
    domains = {domain for _, first, _ in with_gtids for domain in first} | set(position)
    if target_gtid is not None:
        domains |= set(target_gtid)
    for domain in sorted(domains):
        goal = target_gtid.get(domain) if target_gtid is not None else None
        if target_gtid is not None and goal is None:
            continue
        reached = position.get(domain)
        current = reached.seq if reached else 0
        ranges = sorted(((first[domain], last[domain], record)
                         for record, first, last in with_gtids if domain in first),
                        key=lambda item: item[0].seq)
        for first, last, record in ranges:
            if last.seq <= current:
                continue
            if goal is not None and current >= goal.seq:
                break
            if target_time is not None and record.first_event_at is not None \
                    and parse_time(record.first_event_at) >= target_time:
                break
            if first.seq > current + 1:
                raise PlanError(
                    f"archived binlogs have a gap in domain {domain}: GTIDs "
                    f"{domain}-{first.server_id}-{current + 1} to {domain}-{first.server_id}-"
                    f"{first.seq - 1} are in no archived binlog (the next one, "
                    f"{record.server_id}/{record.file}, starts at {first})")
            wanted[record.key] = record
            current = last.seq
        if goal is not None and current < goal.seq:
            raise PlanError(f"pointInTime {goal} is after the newest archived binlog of "
                            f"domain {domain} (it ends at {domain}-?-{current})")
    if target_time is not None:
        newest = max((parse_time(r.closed_at) for r in archived), default=backup.ended)
        if target_time > newest:
            raise PlanError(f"pointInTime {iso(target_time)} is after the newest archived "
                            f"binlog (closed {iso(newest)})")
    return sorted(wanted.values(), key=lambda r: min(
        (g.seq for g in parse_gtid_list(r.first).values()), default=0))


# --- etcd snapshots ------------------------------------------------------------------------------

ETCD = "etcd/"


@dataclass(frozen=True)
class SnapshotManifest:
    """An etcd snapshot: ``etcd/<id>/snapshot.db`` and, written after it, this manifest."""

    id: str
    size: int
    sha256: str
    created_at: str
    source: str
    format: int = MANIFEST_FORMAT

    @property
    def key(self) -> str:
        return f"{ETCD}{self.id}/snapshot.db"

    @property
    def manifest_key(self) -> str:
        return f"{ETCD}{self.id}/manifest.json"

    @property
    def ended(self) -> dt.datetime:
        """When it was complete, as retention reads it."""
        return parse_time(self.created_at)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(document: Mapping[str, Any]) -> SnapshotManifest:
        known = set(SnapshotManifest.__dataclass_fields__)
        return SnapshotManifest(**{k: v for k, v in document.items() if k in known})


def list_snapshots(store: Store) -> list[SnapshotManifest]:
    """Complete snapshots (with a manifest), oldest first."""
    keys = {key for key, _ in store.objects(ETCD)}
    found = [SnapshotManifest.from_json(store.get_json(key)) for key in sorted(keys)
             if key.endswith("/manifest.json")]
    return sorted(found, key=lambda s: (s.created_at, s.id))


def choose_snapshot(snapshots: list[SnapshotManifest], wanted: str) -> SnapshotManifest:
    if not snapshots:
        raise PlanError("the store holds no complete etcd snapshot (one with a manifest)")
    if wanted == "latest":
        return snapshots[-1]
    for snapshot in snapshots:
        if snapshot.id == wanted:
            return snapshot
    raise PlanError(f"no complete etcd snapshot {wanted!r}; complete ones: "
                    f"{', '.join(s.id for s in snapshots)}")
