# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The backup repository: layout, manifest, completeness, listing and retention.

PRIVATE to the collection: not a public API.  Imports nothing from Ansible.

Layout (docs/dev/contracts.md section 4)::

    <repo>/<pool-uuid>/<vm-uuid>/<YYYYMMDDTHHMMSSZ>/{vm.xva.zst|vm.xva.gz|vm.xva, manifest.json}
    <repo>/<pool-uuid>/pool/<YYYYMMDDTHHMMSSZ>/{pool-db.xml, manifest.json}

A backup is complete iff ``manifest.json`` exists, parses, has ``format: 1`` and the stored
file's size and sha256 equal the manifest's.  Storage is reached through a small interface with
two implementations: the local file system and the helper run over the task's connection.
"""

from __future__ import annotations

import abc
import datetime
import hashlib
import json
import os
import re
import shutil
import tempfile

from ansible_collections.xapi.backup.plugins.module_utils._errors import BackupError

MANIFEST_FORMAT = 1
MANIFEST_NAME = "manifest.json"
STATUS_NAME = "status.json"
INTENT_NAME = "export.json"
POOL_DIR = "pool"
RUNS_DIR = "runs"
POOL_DB_NAME = "pool-db.xml"
METADATA_NAME = "metadata.xva"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
STORED_NAMES = {"zstd": "vm.xva.zst", "gzip": "vm.xva.gz", "none": "vm.xva"}
KIND_VM = "vm"
KIND_POOL = "pool"

_TIMESTAMP_RE = re.compile(r"^\d{8}T\d{6}Z$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SECRET_KEYS = frozenset(("session", "session_id", "session_ref", "password", "xapi_session", "secret"))
_SECRET_QUERY_RE = re.compile(r"(session_id=)[^&\s\"']+")
_HASH_BLOCK = 8 * 1024 * 1024


class RepositoryError(BackupError):
    """A repository operation failed; ``code`` is a short machine-readable word."""

    CODE = "REPOSITORY_ERROR"


# ---------------------------------------------------------------- names and paths


def utcnow() -> datetime.datetime:
    """The current time, timezone-aware UTC."""
    return datetime.datetime.now(datetime.timezone.utc)


def timestamp_name(when: datetime.datetime) -> str:
    """Directory name of a backup taken at ``when`` (``20261121T235901Z``)."""
    return when.astimezone(datetime.timezone.utc).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(name: str) -> datetime.datetime | None:
    """Inverse of :func:`timestamp_name`; None when ``name`` is not a timestamp."""
    if not _TIMESTAMP_RE.match(name or ""):
        return None
    try:
        parsed = datetime.datetime.strptime(name, TIMESTAMP_FORMAT)
    except ValueError:
        return None
    return parsed.replace(tzinfo=datetime.timezone.utc)


def iso_time(when: datetime.datetime) -> str:
    """UTC ISO time with a ``Z`` suffix, second precision."""
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_run_id(now: datetime.datetime) -> str:
    """The default run id: the UTC date (one backup window per day)."""
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d")


def is_uuid(text: str) -> bool:
    return bool(_UUID_RE.match(text or ""))


def stored_name(codec: str) -> str:
    """File name of the stored export for ``codec`` (zstd, gzip or none)."""
    try:
        return STORED_NAMES[codec]
    except KeyError:
        raise RepositoryError("unknown codec %r (expected one of %s)" % (codec, ", ".join(sorted(STORED_NAMES))), "BAD_CODEC")


def backup_id(pool_uuid: str, owner: str, timestamp: str) -> str:
    """Backup id ``<pool-uuid>/<vm-uuid or pool>/<timestamp>`` (relative path inside the repository)."""
    return "/".join((pool_uuid, owner, timestamp))


def parse_backup_id(text: str) -> tuple[str, str, str]:
    """Split a backup id into (pool uuid, vm uuid or ``pool``, timestamp); raise on anything else."""
    parts = (text or "").strip("/").split("/")
    if len(parts) != 3 or not is_uuid(parts[0]) or not (is_uuid(parts[1]) or parts[1] == POOL_DIR):
        raise RepositoryError("not a backup id: %r (expected <pool-uuid>/<vm-uuid>/<timestamp>)" % text, "BAD_BACKUP_ID")
    if parse_timestamp(parts[2]) is None:
        raise RepositoryError("not a backup id: %r (bad timestamp %r)" % (text, parts[2]), "BAD_BACKUP_ID")
    return parts[0], parts[1], parts[2]


def backup_path(repo: str, ident: str) -> str:
    """Absolute directory of backup ``ident`` inside ``repo``."""
    return os.path.join(repo, *parse_backup_id(ident))


def vm_dir(repo: str, pool_uuid: str, vm_uuid: str) -> str:
    return os.path.join(repo, pool_uuid, vm_uuid)


def relative_id(repo: str, path: str) -> str | None:
    """The backup id of ``path`` (a directory inside ``repo``), or None if it is not 3 levels deep."""
    rel = os.path.relpath(os.path.normpath(path), os.path.normpath(repo))
    parts = rel.split(os.sep)
    if rel.startswith("..") or len(parts) != 3:
        return None
    return "/".join(parts)


# ---------------------------------------------------------------- secrets


def strip_secrets(value):
    """Copy of ``value`` without secret-named keys and with ``session_id=`` query values masked."""
    if isinstance(value, dict):
        return dict((k, strip_secrets(v)) for k, v in value.items() if str(k).lower() not in _SECRET_KEYS)
    if isinstance(value, (list, tuple)):
        return [strip_secrets(v) for v in value]
    if isinstance(value, str):
        return _SECRET_QUERY_RE.sub(r"\1********", value)
    return value


# ---------------------------------------------------------------- manifest


def build_manifest(kind: str, *, tool_version: str, pool: dict, xapi_version: str | None, run_id: str,
                   files: dict, started: datetime.datetime, ended: datetime.datetime,
                   stored_file: str | None = None, vm: dict | None = None, snapshot: dict | None = None,
                   codec: dict | None = None, raw_size: int | None = None, raw_hash: str | None = None,
                   helper_result: dict | None = None) -> dict:
    """Build a format-1 manifest.

    ``files`` maps each file name of the backup to ``{"size": N, "sha256": H}``; ``stored_file`` names
    the main file whose size and sha256 decide completeness (the export, or the pool database dump).
    Secrets are stripped from everything that goes in.
    """
    if stored_file is not None and stored_file not in files:
        raise RepositoryError("stored file %r is not among the manifest's files" % stored_file, "BAD_MANIFEST")
    duration = max((ended - started).total_seconds(), 0.0)
    stored = files.get(stored_file, {}) if stored_file else {}
    measured = raw_size if raw_size is not None else stored.get("size")
    manifest = {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "tool": {"name": "xapi.backup", "version": tool_version},
        "pool": {"uuid": pool.get("uuid"), "name": pool.get("name")},
        "xapi_version": xapi_version,
        "run_id": run_id,
        "vm": vm,
        "snapshot": snapshot,
        "codec": codec,
        "stored_file": stored_file,
        "stored_size": stored.get("size"),
        "sha256": stored.get("sha256"),
        "raw_size": raw_size,
        "raw_hash": raw_hash,
        "files": files,
        "started": iso_time(started),
        "ended": iso_time(ended),
        "duration": round(duration, 3),
        "rate": int(measured / duration) if measured and duration > 0 else None,
        "helper_result": helper_result,
    }
    return strip_secrets(manifest)


def parse_manifest(data) -> dict:
    """Validate a manifest (JSON text or an already parsed object) and return it as a dict."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise RepositoryError("manifest is not valid JSON: %s" % exc, "BAD_MANIFEST")
    if not isinstance(data, dict):
        raise RepositoryError("manifest is not a JSON object", "BAD_MANIFEST")
    if data.get("format") != MANIFEST_FORMAT:
        raise RepositoryError("unsupported manifest format %r (expected %d)" % (data.get("format"), MANIFEST_FORMAT), "BAD_MANIFEST")
    stored_file = data.get("stored_file")
    if not isinstance(stored_file, str) or not stored_file or "/" in stored_file:
        raise RepositoryError("manifest has no valid stored_file", "BAD_MANIFEST")
    if not isinstance(data.get("stored_size"), int) or not isinstance(data.get("sha256"), str):
        raise RepositoryError("manifest lacks stored_size or sha256", "BAD_MANIFEST")
    if not isinstance(data.get("run_id"), str):
        raise RepositoryError("manifest lacks run_id", "BAD_MANIFEST")
    return data


def dump_manifest(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------- storage


class Storage(abc.ABC):
    """Where the repository lives.  Paths are absolute paths on the storage's host."""

    @abc.abstractmethod
    def scan(self, repo: str, pool: str | None = None, vm: str | None = None) -> list:
        """Backup directories (3 levels below ``repo``) as ``{path, files, manifest, manifest_error}``."""

    @abc.abstractmethod
    def exists(self, repo: str) -> bool:
        """Whether the repository directory exists."""

    @abc.abstractmethod
    def hash_file(self, path: str) -> tuple[int, str]:
        """(size, sha256 hex) of a file."""

    @abc.abstractmethod
    def write_json(self, path: str, document: dict) -> None:
        """Write ``document`` atomically (temp, fsync, rename), mode 0600, parents 0700."""

    @abc.abstractmethod
    def remove_backup(self, repo: str, path: str) -> None:
        """Remove one backup directory below ``repo``."""


def _file_sha256(path: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while True:
            block = handle.read(_HASH_BLOCK)
            if not block:
                break
            size += len(block)
            digest.update(block)
    return size, digest.hexdigest()


def _read_manifest_file(path: str) -> tuple[dict | None, str | None]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, "cannot read manifest: %s" % exc
    try:
        return json.loads(raw), None
    except ValueError as exc:
        return None, "manifest is not valid JSON: %s" % exc


def _subdirs(path: str, only: str | None = None) -> list:
    if only is not None:
        return [only] if os.path.isdir(os.path.join(path, only)) else []
    try:
        return sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)) and not n.startswith("."))
    except OSError:
        return []


def makedirs_private(path: str) -> None:
    """Create ``path`` and missing parents with mode 0700."""
    if os.path.isdir(path):
        return
    makedirs_private(os.path.dirname(path))
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file (0600) in the same directory, fsync, rename."""
    directory = os.path.dirname(path) or "."
    makedirs_private(directory)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".partial", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class LocalStorage(Storage):
    """The repository on the file system of the process running this code."""

    def scan(self, repo, pool=None, vm=None):
        entries = []
        for pool_name in _subdirs(repo, pool):
            for owner in _subdirs(os.path.join(repo, pool_name), vm):
                if owner == RUNS_DIR:
                    continue
                owner_path = os.path.join(repo, pool_name, owner)
                for stamp in _subdirs(owner_path):
                    entries.append(self._entry(os.path.join(owner_path, stamp)))
        return entries

    def exists(self, repo):
        return os.path.isdir(repo)

    @staticmethod
    def _entry(path):
        files = {}
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if os.path.isfile(full):
                files[name] = os.path.getsize(full)
        manifest, error = _read_manifest_file(os.path.join(path, MANIFEST_NAME))
        return {"path": path, "files": files, "manifest": manifest, "manifest_error": error}

    def hash_file(self, path):
        try:
            return _file_sha256(path)
        except OSError as exc:
            raise RepositoryError("cannot hash %s: %s" % (path, exc.strerror or exc), "IO_ERROR")

    def write_json(self, path, document):
        try:
            atomic_write(path, dump_manifest(strip_secrets(document)).encode("utf-8"))
        except OSError as exc:
            raise RepositoryError("cannot write %s: %s" % (path, exc.strerror or exc), "IO_ERROR")

    def remove_backup(self, repo, path):
        if relative_id(repo, path) is None or os.path.islink(path):
            raise RepositoryError("refusing to remove %s: not a backup directory of %s" % (path, repo), "NOT_A_BACKUP")
        if not os.path.isdir(path):
            raise RepositoryError("%s does not exist" % path, "NOT_FOUND")
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise RepositoryError("cannot remove %s: %s" % (path, exc.strerror or exc), "IO_ERROR")


class HelperStorage(Storage):
    """The repository on the helper's host, reached through helper subcommands.

    ``run(subcommand, args, stdin)`` runs the helper and returns its parsed JSON success object
    (it raises on failure); ``helper_calls`` collects what was run.
    """

    def __init__(self, run) -> None:
        self._run = run

    def scan(self, repo, pool=None, vm=None):
        args = ["--repo", repo]
        if pool:
            args += ["--pool", pool]
        if vm:
            args += ["--vm", vm]
        return list(self._run("repo-scan", args, None).get("entries") or [])

    def exists(self, repo):
        # a scan restricted to a pool that cannot exist answers cheaply with repo_exists
        result = self._run("repo-scan", ["--repo", repo, "--pool", "00000000-0000-0000-0000-000000000000"], None)
        return bool(result.get("repo_exists", True))

    def hash_file(self, path):
        result = self._run("repo-hash", ["--in", path], None)
        return int(result["size"]), str(result["sha256"])

    def write_json(self, path, document):
        self._run("repo-write", ["--out", path], dump_manifest(strip_secrets(document)))

    def remove_backup(self, repo, path):
        if relative_id(repo, path) is None:
            raise RepositoryError("refusing to remove %s: not a backup directory of %s" % (path, repo), "NOT_A_BACKUP")
        self._run("repo-remove", ["--repo", repo, "--path", path], None)


# ---------------------------------------------------------------- listing


class Backup:
    """One backup directory, complete or not."""

    def __init__(self, ident: str, path: str, files: dict, manifest: dict | None, complete: bool, problem: str | None) -> None:
        self.id = ident
        self.path = path
        self.pool_uuid, self.owner, self.timestamp = ident.split("/")
        self.time = parse_timestamp(self.timestamp)
        self.files = dict(files)
        self.manifest = manifest
        self.complete = complete
        self.problem = problem

    @property
    def kind(self) -> str:
        return KIND_POOL if self.owner == POOL_DIR else KIND_VM

    @property
    def run_id(self) -> str | None:
        return (self.manifest or {}).get("run_id")

    @property
    def size(self) -> int:
        return sum(int(v) for v in self.files.values())

    @property
    def stored_file(self) -> str | None:
        return (self.manifest or {}).get("stored_file")

    @property
    def stored_path(self) -> str | None:
        name = self.stored_file
        return os.path.join(self.path, name) if name else None

    def age(self, now: datetime.datetime) -> float | None:
        return None if self.time is None else (now - self.time).total_seconds()

    def as_dict(self, now: datetime.datetime) -> dict:
        manifest = self.manifest or {}
        age = self.age(now)
        return {
            "id": self.id,
            "path": self.path,
            "kind": self.kind,
            "pool_uuid": self.pool_uuid,
            "vm_uuid": None if self.kind == KIND_POOL else self.owner,
            "vm_name": (manifest.get("vm") or {}).get("name_label"),
            "timestamp": self.timestamp,
            "time": iso_time(self.time) if self.time else None,
            "age_seconds": None if age is None else int(age),
            "complete": self.complete,
            "problem": self.problem,
            "run_id": self.run_id,
            "size": self.size,
            "stored_file": self.stored_file,
            "stored_size": manifest.get("stored_size"),
            "raw_size": manifest.get("raw_size"),
            "codec": (manifest.get("codec") or {}).get("codec"),
            "disks": list((manifest.get("vm") or {}).get("disks") or []),
            "vifs": list((manifest.get("vm") or {}).get("vifs") or []),
        }


def check_entry(entry: dict, hasher=None) -> tuple[dict | None, str | None]:
    """Apply the completeness rule to one scan entry: (parsed manifest or None, problem or None).

    ``hasher(path) -> (size, sha256)``; None skips the sha256 comparison (sizes are still compared).
    """
    files = entry.get("files") or {}
    if entry.get("manifest_error"):
        return None, entry["manifest_error"]
    if entry.get("manifest") is None:
        return None, "no manifest (incomplete)"
    try:
        manifest = parse_manifest(entry["manifest"])
    except RepositoryError as exc:
        return None, exc.message
    name = manifest["stored_file"]
    if name not in files:
        return manifest, "stored file %s is missing" % name
    if int(files[name]) != manifest["stored_size"]:
        return manifest, "stored file %s has %d bytes, manifest says %d" % (name, int(files[name]), manifest["stored_size"])
    if hasher is not None:
        size, digest = hasher(os.path.join(entry["path"], name))
        if size != manifest["stored_size"] or digest != manifest["sha256"]:
            return manifest, "stored file %s does not match the manifest's sha256" % name
    return manifest, None


def require_repository(storage: Storage, repo: str) -> None:
    """Raise unless the repository exists (reading verbs must not report a mistyped path as empty)."""
    if not storage.exists(repo):
        raise RepositoryError("repository %s does not exist on the task's host" % repo, "NO_REPOSITORY")


def list_backups(storage: Storage, repo: str, pool: str | None = None, vm: str | None = None,
                 check_hash: bool = True) -> list:
    """All backups under ``repo`` (optionally one pool / VM), oldest first."""
    hasher = storage.hash_file if check_hash else None
    backups = []
    for entry in storage.scan(repo, pool=pool, vm=vm):
        ident = relative_id(repo, entry["path"])
        if ident is None or ident.startswith(".") or ident.split("/")[1] == RUNS_DIR:
            continue
        manifest, problem = check_entry(entry, hasher)
        backups.append(Backup(ident, entry["path"], entry.get("files") or {}, manifest, problem is None, problem))
    return sorted(backups, key=_sort_key)


def _sort_key(backup: Backup):
    return (backup.pool_uuid, backup.owner, backup.time is None, backup.timestamp)


def group_by_owner(backups: list) -> dict:
    """``{(pool uuid, vm uuid or "pool"): [backups oldest first]}``."""
    groups = {}
    for backup in sorted(backups, key=_sort_key):
        groups.setdefault((backup.pool_uuid, backup.owner), []).append(backup)
    return groups


def newest_complete(backups: list) -> Backup | None:
    complete = [b for b in backups if b.complete and b.time is not None]
    return max(complete, key=lambda b: b.time) if complete else None


def find_run_backup(backups: list, owner: str, run_id: str) -> Backup | None:
    """The newest complete backup of ``owner`` (a vm uuid or ``pool``) made under ``run_id``."""
    matching = [b for b in backups if b.owner == owner and b.run_id == run_id]
    return newest_complete(matching)


def export_reason(backups: list, owner: str, run_id: str, force: bool) -> str | None:
    """Why an export is needed, or None when a complete backup of this run already exists."""
    if force:
        return "force is set"
    existing = find_run_backup(backups, owner, run_id)
    if existing is not None:
        return None
    return "no complete backup of %s with run id %s" % (owner, run_id)


def select_backup(backups: list, owner: str, which: str) -> Backup:
    """A complete backup of ``owner``: ``latest`` or a timestamp; raise if there is none."""
    candidates = [b for b in backups if b.owner == owner]
    if which == "latest":
        found = newest_complete(candidates)
        if found is None:
            raise RepositoryError("no complete backup of %s in the repository" % owner, "NO_BACKUP")
        return found
    for backup in candidates:
        if backup.timestamp == which:
            if not backup.complete:
                raise RepositoryError("backup %s is not complete: %s" % (backup.id, backup.problem), "INCOMPLETE_BACKUP")
            return backup
    raise RepositoryError("no backup of %s with timestamp %s" % (owner, which), "NO_BACKUP")


# ---------------------------------------------------------------- retention


class RetentionPolicy:
    """keep_last / keep_daily / keep_weekly / keep_monthly; None (or 0) means "this rule keeps nothing"."""

    def __init__(self, keep_last=None, keep_daily=None, keep_weekly=None, keep_monthly=None) -> None:
        for name, value in (("keep_last", keep_last), ("keep_daily", keep_daily),
                            ("keep_weekly", keep_weekly), ("keep_monthly", keep_monthly)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise RepositoryError("%s must be a non-negative integer, got %r" % (name, value), "BAD_RETENTION")
        self.keep_last = keep_last or 0
        self.keep_daily = keep_daily or 0
        self.keep_weekly = keep_weekly or 0
        self.keep_monthly = keep_monthly or 0

    @property
    def empty(self) -> bool:
        return not (self.keep_last or self.keep_daily or self.keep_weekly or self.keep_monthly)


def _day(when):
    return when.strftime("%Y-%m-%d")


def _week(when):
    year, week = when.isocalendar()[:2]
    return "%04d-W%02d" % (year, week)


def _month(when):
    return when.strftime("%Y-%m")


def retention_reasons(times: list, policy: RetentionPolicy) -> dict:
    """Which of ``times`` (datetimes of complete backups) each rule keeps.

    Returns ``{index: [reasons]}`` for the kept ones.  ``keep_last`` keeps the N newest; the
    calendar rules keep the newest backup of each of the N most recent days / ISO weeks / months
    that have a backup.  The newest backup is always kept.
    """
    order = sorted(range(len(times)), key=lambda i: times[i], reverse=True)
    kept = {}
    for i in order[:policy.keep_last]:
        kept.setdefault(i, []).append("keep_last")
    for rule, count, bucket in (("keep_daily", policy.keep_daily, _day),
                                ("keep_weekly", policy.keep_weekly, _week),
                                ("keep_monthly", policy.keep_monthly, _month)):
        seen = []
        for i in order:
            key = bucket(times[i])
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(key)
            kept.setdefault(i, []).append(rule)
    if order:
        kept.setdefault(order[0], []).append("newest")
    return kept


class PrunePlan:
    """Result of :func:`plan_prune`: what stays, what goes, and why."""

    def __init__(self) -> None:
        self.keep = []      # (backup, [reasons])
        self.remove = []    # (backup, reason)

    @property
    def remove_ids(self) -> list:
        return [b.id for b, _reason in self.remove]


def plan_prune(backups: list, policy: RetentionPolicy, now: datetime.datetime, incomplete_grace: float) -> PrunePlan:
    """Decide which backups to remove.

    Complete backups of each VM (or pool dump series) are kept by ``policy``; the newest complete one
    is never removed; with an empty policy every complete backup is kept.  Incomplete backups are
    never counted; they are removed once older than ``incomplete_grace`` seconds (those whose age is
    unknown are kept).
    """
    plan = PrunePlan()
    for _owner, group in sorted(group_by_owner(backups).items()):
        complete = [b for b in group if b.complete and b.time is not None]
        reasons = retention_reasons([b.time for b in complete], policy)
        for index, backup in enumerate(complete):
            if policy.empty:
                plan.keep.append((backup, ["no retention rule"]))
            elif index in reasons:
                plan.keep.append((backup, reasons[index]))
            else:
                plan.remove.append((backup, "not kept by any retention rule"))
        for backup in group:
            if backup.complete and backup.time is not None:
                continue
            age = backup.age(now)
            if age is not None and age > incomplete_grace:
                plan.remove.append((backup, "incomplete (%s) and older than the grace period" % backup.problem))
            else:
                plan.keep.append((backup, ["incomplete, within the grace period" if age is not None else "incomplete, age unknown"]))
    return plan
