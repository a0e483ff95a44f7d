# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The backup repository: layout, manifest, completeness, trust, listing and retention.

PRIVATE to the collection: not a public API.  Imports nothing from Ansible.

Layout, manifest format 2, the signature and the status rules: docs/dev/contracts.md section 4.

    <repo>/.xapi-backup-repository.json                       the marker (prune refuses a repository without it)
    <repo>/<pool-uuid>/<vm-uuid>/<YYYYMMDDTHHMMSSZ[-N]>/{vm.xva.zst|vm.xva.gz|vm.xva, manifest.json}
    <repo>/<pool-uuid>/pool/<YYYYMMDDTHHMMSSZ[-N]>/{pool-db.xml, vm-<uuid>.metadata.xva, manifest.json}

The repository is untrusted input.  Every file operation on it is one of the helper's ``repo-*``
subcommands (the ONE implementation: directory fds, O_NOFOLLOW, O_EXCL); this module only decides.
Backups are ordered by the ``sequence`` recorded in their manifest, never by names or clocks.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import hmac
import importlib.machinery
import importlib.util
import io
import json
import os
import re
import subprocess
import sys

from ansible_collections.xapi.backup.plugins.module_utils import _delta
from ansible_collections.xapi.backup.plugins.module_utils._constants import MAX_SEQUENCE
from ansible_collections.xapi.backup.plugins.module_utils._errors import BackupError

MANIFEST_FORMAT = 2
READABLE_FORMATS = (1, 2)
MANIFEST_NAME = "manifest.json"
MARKER_NAME = ".xapi-backup-repository.json"
STATUS_NAME = "status.json"
#: Status files a detached export writes in its backup directory: the XVA path's, the VHD delta path's.
WRITER_STATUS_NAMES = (STATUS_NAME, "export-vdi.status.json")
INTENT_NAME = "export.json"
POOL_DIR = "pool"
RUNS_DIR = "runs"
IMPORT_STATUS_DIR = ".xapi-backup"
POOL_DB_NAME = "pool-db.xml"
METADATA_NAME = "metadata.xva"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
STORED_NAMES = {"zstd": "vm.xva.zst", "gzip": "vm.xva.gz", "none": "vm.xva"}
KIND_VM = "vm"
KIND_POOL = "pool"
# manifest kinds -> the owner directory they live in (vm uuid or "pool"); issue 12 adds "vm-delta": KIND_VM
MANIFEST_KIND_VM_XVA = "vm-xva"
MANIFEST_KIND_POOL_DB = "pool-db"
MANIFEST_KIND_VM_DELTA = _delta.KIND_DELTA  # VHD chains (issue 12), checked further by _delta
MANIFEST_KINDS = {MANIFEST_KIND_VM_XVA: KIND_VM, MANIFEST_KIND_POOL_DB: KIND_POOL, MANIFEST_KIND_VM_DELTA: KIND_VM}
DIGEST_ALGORITHMS = ("blake2b", "sha256")
SIGNATURE_ALG = "hmac-sha256"
FUTURE_TOLERANCE = 300.0  # seconds: a backup dated further ahead than this is future_dated

STATUS_COMPLETE = "complete"
STATUS_INCOMPLETE = "incomplete"
STATUS_UNTRUSTED = "untrusted"
STATUS_UNKNOWN = "unknown"

NO_KEY_WARNING = ("no repository key is set (xapi_backup_repository_key / repository_key): backups are not "
                  "authenticated, a backup forged on the share would be trusted")

_TIMESTAMP_RE = re.compile(r"^\d{8}T\d{6}Z$")
_BACKUP_DIR_RE = re.compile(r"^(\d{8}T\d{6}Z)(-[0-9]{1,2})?$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DIGEST_RE = re.compile(r"^(blake2b|sha256):[0-9a-f]{64}$")
_SECRET_KEYS = frozenset(("session", "session_id", "session_ref", "password", "xapi_session", "secret",
                          "repository_key"))
_SECRET_QUERY_RE = re.compile(r"(session_id=)[^&\s\"']+")


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
    """Time of a backup directory name (``20261121T235901Z`` or ``20261121T235901Z-2``); None otherwise."""
    match = _BACKUP_DIR_RE.match(name or "")
    if not match:
        return None
    try:
        parsed = datetime.datetime.strptime(match.group(1), TIMESTAMP_FORMAT)
    except ValueError:
        return None
    return parsed.replace(tzinfo=datetime.timezone.utc)


def iso_time(when: datetime.datetime) -> str:
    """UTC ISO time with a ``Z`` suffix, second precision."""
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_uuid(text: str) -> bool:
    return bool(_UUID_RE.match(text or ""))


def stored_name(codec: str) -> str:
    """File name of the stored export for ``codec`` (zstd, gzip or none)."""
    try:
        return STORED_NAMES[codec]
    except KeyError:
        raise RepositoryError("unknown codec %r (expected one of %s)" % (codec, ", ".join(sorted(STORED_NAMES))), "BAD_CODEC")


def backup_id(pool_uuid: str, owner: str, timestamp: str) -> str:
    """Backup id ``<pool-uuid>/<vm-uuid or pool>/<backup dir>`` (relative path inside the repository)."""
    return "/".join((pool_uuid, owner, timestamp))


def parse_backup_id(text: str) -> tuple[str, str, str]:
    """Split a backup id into (pool uuid, vm uuid or ``pool``, backup dir); raise on anything else."""
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


def relative_path(repo: str, path: str) -> str:
    """``path`` (absolute, inside ``repo``, or already relative) relative to ``repo``; raise when outside."""
    if not os.path.isabs(path):
        rel = os.path.normpath(path)
    else:
        rel = os.path.relpath(os.path.normpath(path), os.path.normpath(repo))
    if rel in (".", "") or rel.startswith("..") or os.path.isabs(rel):
        raise RepositoryError("%s is not inside the repository %s" % (path, repo), "NOT_IN_REPOSITORY")
    return rel.replace(os.sep, "/")


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


# ---------------------------------------------------------------- digests and signatures


def digest_of(data: bytes, algorithm: str = "blake2b") -> str:
    """``blake2b:<hex>`` (BLAKE2b-256) or ``sha256:<hex>`` of ``data``."""
    if algorithm == "blake2b":
        return "blake2b:" + hashlib.blake2b(data, digest_size=32).hexdigest()
    if algorithm == "sha256":
        return "sha256:" + hashlib.sha256(data).hexdigest()
    raise RepositoryError("unknown digest algorithm %r" % algorithm, "BAD_DIGEST")


def digest_algorithm(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise RepositoryError("not a digest: %r (expected blake2b:<hex> or sha256:<hex>)" % (digest,), "BAD_MANIFEST")
    return digest.split(":", 1)[0]


def _key_bytes(key) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def canonical_bytes(manifest: dict) -> bytes:
    """What the signature covers: every field except ``signature``, as sorted-keys compact ASCII JSON."""
    body = dict((k, v) for k, v in manifest.items() if k != "signature")
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def key_id(key) -> str:
    """A short public name of a key (tells which key signed, reveals nothing about it)."""
    return hmac.new(_key_bytes(key), b"xapi-backup key id", hashlib.sha256).hexdigest()[:16]


def sign_manifest(manifest: dict, key) -> dict:
    """Copy of ``manifest`` with its HMAC-SHA256 ``signature`` (the controller signs; the key goes nowhere)."""
    signed = dict(manifest)
    signed.pop("signature", None)
    value = hmac.new(_key_bytes(key), canonical_bytes(signed), hashlib.sha256).hexdigest()
    signed["signature"] = {"alg": SIGNATURE_ALG, "key_id": key_id(key), "value": value}
    return signed


def signature_problem(manifest: dict, key) -> str | None:
    """Why ``manifest`` is not signed by ``key`` (None: it is)."""
    sig = manifest.get("signature")
    if not isinstance(sig, dict):
        return "manifest is not signed"
    if sig.get("alg") != SIGNATURE_ALG or not isinstance(sig.get("value"), str):
        return "manifest signature has an unknown form"
    expected = hmac.new(_key_bytes(key), canonical_bytes(manifest), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig["value"]):
        if sig.get("key_id") not in (None, key_id(key)):
            return "manifest is signed with another key (key id %s)" % str(sig.get("key_id"))[:16]
        return "manifest signature is wrong (edited or forged)"
    return None


# ---------------------------------------------------------------- manifest


def _normal_files(files: dict) -> dict:
    out = {}
    for name, info in (files or {}).items():
        info = dict(info)
        if "digest" not in info and info.get("sha256"):
            info["digest"] = "sha256:" + info.pop("sha256")
        info.pop("sha256", None)
        out[name] = {"size": int(info["size"]), "digest": str(info["digest"])}
    return out


def build_manifest(kind: str, *, tool_version: str, pool: dict, xapi_version: str | None, run_id: str,
                   files: dict, started: datetime.datetime, ended: datetime.datetime,
                   stored_file: str | None = None, vm: dict | None = None, snapshot: dict | None = None,
                   codec: dict | None = None, raw_size: int | None = None, raw_hash: str | None = None,
                   helper_result: dict | None = None, ident: str | None = None, sequence: int | None = None,
                   repository_id: str | None = None) -> dict:
    """Build a format-2 manifest (docs/dev/contracts.md section 4).

    ``kind``: a manifest kind (``vm-xva``, ``pool-db``) or the owner kinds ``vm``/``pool`` (mapped to
    ``vm-xva``/``pool-db``).  ``files`` maps every stored file to ``{"size": N, "digest": "algo:hex"}``
    (``{"sha256": H}`` is accepted for the export's in-stream hash).  Secrets are stripped.
    """
    kind = {KIND_VM: MANIFEST_KIND_VM_XVA, KIND_POOL: MANIFEST_KIND_POOL_DB}.get(kind, kind)
    files = _normal_files(files)
    if stored_file is not None and stored_file not in files:
        raise RepositoryError("stored file %r is not among the manifest's files" % stored_file, "BAD_MANIFEST")
    duration = max((ended - started).total_seconds(), 0.0)
    stored = files.get(stored_file, {}) if stored_file else {}
    measured = raw_size if raw_size is not None else stored.get("size")
    manifest = {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "id": ident,
        "sequence": sequence,
        "created": iso_time(started),
        "repository_id": repository_id,
        "tool": {"name": "xapi.backup", "version": tool_version},
        "pool": {"uuid": pool.get("uuid"), "name": pool.get("name")},
        "xapi_version": xapi_version,
        "run_id": run_id,
        "vm": vm,
        "snapshot": snapshot,
        "codec": codec,
        "stored_file": stored_file,
        "stored_size": stored.get("size"),
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


def manifest_files(manifest: dict) -> dict:
    """``{name: {"size", "digest"}}`` of a parsed manifest, format 1 or 2."""
    if manifest.get("format") == 1:
        return {manifest["stored_file"]: {"size": manifest["stored_size"], "digest": "sha256:" + manifest["sha256"]}}
    return manifest["files"]


def parse_manifest(data) -> dict:
    """Validate a manifest (JSON text or an already parsed object) and return it as a dict.

    Raises ``RepositoryError`` with code ``UNKNOWN_MANIFEST`` for a newer format or an unknown kind
    (kept, never removed), ``BAD_MANIFEST`` for anything else that is wrong.
    """
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise RepositoryError("manifest is not valid JSON: %s" % exc, "BAD_MANIFEST")
    if not isinstance(data, dict):
        raise RepositoryError("manifest is not a JSON object", "BAD_MANIFEST")
    fmt = data.get("format")
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt not in READABLE_FORMATS:
        raise RepositoryError("unsupported manifest format %r (this collection reads %s)"
                              % (fmt, ", ".join(str(f) for f in READABLE_FORMATS)), "UNKNOWN_MANIFEST")
    if not isinstance(data.get("run_id"), str):
        raise RepositoryError("manifest lacks run_id", "BAD_MANIFEST")
    stored_file = data.get("stored_file")
    if fmt == 1:
        if not isinstance(stored_file, str) or not stored_file or "/" in stored_file:
            raise RepositoryError("manifest has no valid stored_file", "BAD_MANIFEST")
        if not isinstance(data.get("stored_size"), int) or not isinstance(data.get("sha256"), str):
            raise RepositoryError("manifest lacks stored_size or sha256", "BAD_MANIFEST")
        return data
    if data.get("kind") not in MANIFEST_KINDS:
        raise RepositoryError("unknown manifest kind %r" % (data.get("kind"),), "UNKNOWN_MANIFEST")
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise RepositoryError("manifest has no files", "BAD_MANIFEST")
    for name, info in files.items():
        if not name or "/" in name or name in (MANIFEST_NAME, ".", ".."):
            raise RepositoryError("manifest names a bad file %r" % name, "BAD_MANIFEST")
        if not isinstance(info, dict) or isinstance(info.get("size"), bool) or not isinstance(info.get("size"), int):
            raise RepositoryError("manifest file %s has no size" % name, "BAD_MANIFEST")
        digest_algorithm(info.get("digest"))
    if stored_file is not None and stored_file not in files:
        raise RepositoryError("manifest's stored_file is not among its files", "BAD_MANIFEST")
    seq = data.get("sequence")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise RepositoryError("manifest has no valid sequence", "BAD_MANIFEST")
    if seq >= MAX_SEQUENCE:
        # planted or corrupt: it would sort after every real backup forever (the "latest", the one
        # retention keeps) -- an unknown entry instead, reported and never removed
        raise RepositoryError("manifest's sequence %.40s is out of range (1 to %d)" % (seq, MAX_SEQUENCE - 1), "BAD_MANIFEST")
    if not isinstance(data.get("id"), str):
        raise RepositoryError("manifest has no id", "BAD_MANIFEST")
    if data["kind"] == MANIFEST_KIND_VM_DELTA:
        try:
            _delta.parse_delta_manifest(data, data["id"])
        except _delta.ChainError as exc:
            raise RepositoryError(str(exc), "BAD_MANIFEST")
    return data


def is_delta(backup) -> bool:
    """A vm-delta backup (a link of a VHD chain, issue 12)."""
    return (backup.manifest or {}).get("kind") == MANIFEST_KIND_VM_DELTA


def identity_problem(manifest: dict, ident: str) -> str | None:
    """Why the manifest does not describe the directory it sits in (moved, copied or forged); None if it does."""
    pool_uuid, owner, _dir = ident.split("/")
    pool = manifest.get("pool") if isinstance(manifest.get("pool"), dict) else {}
    vm = manifest.get("vm") if isinstance(manifest.get("vm"), dict) else {}
    if manifest.get("format") != 1 and manifest.get("id") != ident:
        return "manifest names backup %s, found in %s" % (manifest.get("id"), ident)
    if pool.get("uuid") not in (None, pool_uuid) or (manifest.get("format") != 1 and pool.get("uuid") != pool_uuid):
        return "manifest names pool %s, found under pool %s" % (pool.get("uuid"), pool_uuid)
    if manifest.get("format") == 1:
        if owner != POOL_DIR and vm.get("uuid") not in (None, owner):
            return "manifest names VM %s, found under VM %s" % (vm.get("uuid"), owner)
        return None
    expected_owner = MANIFEST_KINDS[manifest["kind"]]
    if expected_owner == KIND_POOL and owner != POOL_DIR:
        return "a %s manifest under VM directory %s" % (manifest["kind"], owner)
    if expected_owner == KIND_VM and (owner == POOL_DIR or vm.get("uuid") != owner):
        return "manifest names VM %s, found under %s" % (vm.get("uuid"), owner)
    return None


def seal_manifest(manifest: dict, key=None) -> dict:
    """The manifest as written: signed when a repository key is set."""
    return sign_manifest(manifest, key) if key else manifest


def dump_manifest(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------- storage: the helper's repo-* commands


class HelperStorage:
    """The repository, reached ONLY through the helper's ``repo-*`` subcommands.

    ``run(subcommand, args, stdin)`` runs the helper (over the task's connection, or locally) and
    returns its parsed JSON success object; it raises on failure.  Paths given to the helper are
    relative to the repository root.
    """

    def __init__(self, run) -> None:
        self._run = run

    def scan(self, repo, pool=None, vm=None) -> dict:
        """``{"entries", "skipped", "marker", "marker_error", "repo_exists"}`` (docs/dev/contracts.md section 5)."""
        args = ["--repo", repo]
        if pool:
            args += ["--pool", pool]
        if vm:
            args += ["--vm", vm]
        result = self._run("repo-scan", args, None)
        result.setdefault("entries", [])
        result.setdefault("skipped", [])
        return result

    def exists(self, repo) -> bool:
        return bool(self.scan(repo, pool="00000000-0000-0000-0000-000000000000").get("repo_exists", True))

    def hash_file(self, repo, path, algorithm="blake2b") -> tuple[int, str]:
        """(size, ``algo:hex``) of a file of the repository (never through a link)."""
        result = self._run("repo-hash", ["--repo", repo, "--path", relative_path(repo, path), "--digest", algorithm], None)
        return int(result["size"]), str(result["digest"])

    def hash_files(self, repo, paths, algorithm="blake2b") -> dict:
        """``{relative path: (size, "algo:hex")}`` of several files in ONE helper run per
        :data:`HASH_BATCH` files (an interpreter start per file cost more than the hashing).

        A helper that predates repeated ``--path`` answers for one file only: ``{}`` is returned
        then and the caller hashes file by file."""
        rels = [relative_path(repo, path) for path in paths]
        out = {}
        for start in range(0, len(rels), HASH_BATCH):
            chunk = rels[start:start + HASH_BATCH]
            args = ["--repo", repo]
            for rel in chunk:
                args += ["--path", rel]
            result = self._run("repo-hash", args + ["--digest", algorithm], None)
            files = result.get("files")
            if not isinstance(files, list) or [f.get("path") if isinstance(f, dict) else None for f in files] != chunk:
                return {}
            out.update((f["path"], (int(f["size"]), str(f["digest"]))) for f in files)
        return out

    def write_json(self, repo, path, document, exclusive=False) -> dict:
        """Write ``document`` (secrets stripped) atomically; ``exclusive`` refuses to replace a file."""
        args = ["--repo", repo, "--path", relative_path(repo, path), "--json"] + (["--exclusive"] if exclusive else [])
        return self._run("repo-write", args, dump_manifest(strip_secrets(document)))

    def write_text(self, repo, path, text) -> dict:
        return self._run("repo-write", ["--repo", repo, "--path", relative_path(repo, path)], text)

    def sweep_partials(self, repo, ident) -> dict:
        """repo-sweep-partials: remove the ``.partial`` files a dead writer left in one incomplete backup
        (``{"removed": [paths], "kept": [{"path", "reason"}], "proof"}``; links and foreign names are kept)."""
        parse_backup_id(ident)
        return self._run("repo-sweep-partials", ["--repo", repo, "--path", ident], None)

    def remove_backup(self, repo, path, if_incomplete=False) -> None:
        """Remove one backup directory (the helper refuses a repository without the marker, and any link)."""
        ident = relative_id(repo, path) if os.path.isabs(path) else path
        if ident is None:
            raise RepositoryError("refusing to remove %s: not a backup directory of %s" % (path, repo), "NOT_A_BACKUP")
        parse_backup_id(ident)
        self._run("repo-remove", ["--repo", repo, "--path", ident] + (["--if-incomplete"] if if_incomplete else []), None)

    def make_backup_dir(self, repo, pool_uuid, owner, stamp) -> dict:
        """Create a new backup directory exclusively and claim its sequence: ``{id, path, sequence, repository_id}``."""
        created = self._run("repo-mkbackup", ["--repo", repo, "--pool", pool_uuid, "--owner", owner, "--stamp", stamp], None)
        if created.get("planned"):  # check mode: the runner only planned it; this is the id it would have
            ident = backup_id(pool_uuid, owner, stamp)
            return {"id": ident, "path": os.path.join(repo, ident), "sequence": None, "repository_id": None,
                    "planned": True}
        return created

    def lock(self, repo, pool_uuid, owner: dict, take_over: str | None = None) -> dict:
        args = ["--repo", repo, "--pool", pool_uuid] + (["--take-over", take_over] if take_over is not None else [])
        return self._run("repo-lock", args, json.dumps(owner, sort_keys=True))

    def unlock(self, repo, pool_uuid, token) -> dict:
        return self._run("repo-unlock", ["--repo", repo, "--pool", pool_uuid, "--token", token], None)

    def merge_disk(self, repo, target_id, source_vdi, virtual_size, inputs, digests, codec="zstd", level=None) -> dict:
        """repo-merge: the links' stored disks (oldest first) -> a new dynamic VHD in ``target_id``."""
        args = ["--repo", repo, "--out-dir", target_id, "--disk", source_vdi, "--virtual-size", str(int(virtual_size)),
                "--codec", codec] + (["--level", str(level)] if level is not None else [])
        checked = all(isinstance(d, str) and _DIGEST_RE.match(d) for d in digests)  # sha256 or blake2b links
        for path, digest in zip(inputs, digests):
            args += ["--in", path] + (["--in-digest", digest] if checked else [])
        return self._run("repo-merge", args, None)

    def commit_manifest(self, repo, ident, expect_digest, manifest) -> dict:
        """repo-merge-commit: replace ``ident``'s manifest if it is still the one with ``expect_digest``."""
        return self._run("repo-merge-commit", ["--repo", repo, "--path", ident, "--expect-digest", expect_digest],
                         dump_manifest(strip_secrets(manifest)))

    def discard_merged(self, repo, ident, names) -> dict:
        """repo-merge-commit --discard: remove the merged disks a failed merge wrote (unless now listed)."""
        args = ["--repo", repo, "--path", ident]
        for name in names:
            args += ["--discard", name]
        return self._run("repo-merge-commit", args, None)

    def drop_strays(self, repo, ident) -> dict:
        return self._run("repo-merge-commit", ["--repo", repo, "--path", ident, "--cleanup-only"], None)

    def ova_vms(self, repo, path) -> list:
        """The VMs (``[{ref, uuid, name_label}]``) the stored XVA's ova.xml describes."""
        return list(self._run("repo-ova", ["--repo", repo, "--path", relative_path(repo, path)], None).get("vms") or [])


_BUNDLED_HELPER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "roles", "helper", "files", "xapi-backup-helper")


class LocalStorage(HelperStorage):
    """The repository on this host, through the collection's bundled helper (the same code, never a copy).

    ``in_process=True`` (default) loads the helper file as a module and calls its ``repo-*`` command
    functions directly (no interpreter start per call); ``False`` runs it as a subprocess.
    """

    _module = None

    def __init__(self, python: str = sys.executable, helper: str = _BUNDLED_HELPER, timeout: float = 3600.0,
                 in_process: bool = True) -> None:
        self._argv = [python, helper]
        self._helper = helper
        self._timeout = timeout
        super().__init__(self._in_process if in_process else self._subprocess)

    def _load(self):
        if LocalStorage._module is None or LocalStorage._module.__file__ != self._helper:
            loader = importlib.machinery.SourceFileLoader("_xapi_backup_bundled_helper", self._helper)
            spec = importlib.util.spec_from_loader(loader.name, loader)
            module = importlib.util.module_from_spec(spec)
            loader.exec_module(module)
            LocalStorage._module = module
        return LocalStorage._module

    def _in_process(self, subcommand, args, stdin):
        helper = self._load()
        parsed = helper.build_parser().parse_args([subcommand] + list(args))
        saved = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO((stdin or "").encode("utf-8")), encoding="utf-8")
        try:
            return dict(helper.COMMANDS[subcommand](parsed), ok=True)
        except helper.HelperError as exc:
            raise RepositoryError("helper %s failed: %s: %s" % (subcommand, exc.code, exc.message), exc.code)
        finally:
            sys.stdin = saved

    def _subprocess(self, subcommand, args, stdin):
        proc = subprocess.run(self._argv + [subcommand] + list(args), input=(stdin or "").encode("utf-8"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=self._timeout, check=False)
        try:
            result = json.loads(proc.stdout.decode("utf-8"))
        except ValueError:
            result = None
        if not isinstance(result, dict) or result.get("ok") is not True:
            error = (result or {}).get("error") or {}
            code = str(error.get("code") or "HELPER_FAILED")
            message = error.get("message") or proc.stderr.decode("utf-8", "replace")[-300:]
            raise RepositoryError("helper %s failed: %s: %s" % (subcommand, code, message), code)
        return result


# ---------------------------------------------------------------- listing


class Backup:
    """One backup directory, whatever its status."""

    def __init__(self, ident: str, path: str, files: dict, manifest: dict | None, status: str, problem: str | None,
                 now: datetime.datetime | None = None) -> None:
        self.id = ident
        self.path = path
        self.pool_uuid, self.owner, self.timestamp = ident.split("/")
        self.time = parse_timestamp(self.timestamp)
        self.files = dict(files)
        self.manifest = manifest
        self.status = status
        self.problem = problem
        self.claim = None  # the sequence number claimed when the directory was created (repo-mkbackup)
        now = now or utcnow()
        self.future_dated = self.time is not None and (self.time - now).total_seconds() > FUTURE_TOLERANCE

    @property
    def complete(self) -> bool:
        return self.status == STATUS_COMPLETE

    @property
    def kind(self) -> str:
        return KIND_POOL if self.owner == POOL_DIR else KIND_VM

    @property
    def manifest_kind(self) -> str | None:
        manifest = self.manifest or {}
        if manifest.get("format") == 1:
            return MANIFEST_KIND_POOL_DB if self.kind == KIND_POOL else MANIFEST_KIND_VM_XVA
        return manifest.get("kind")

    @property
    def run_id(self) -> str | None:
        return (self.manifest or {}).get("run_id")

    @property
    def sequence(self) -> int | None:
        value = (self.manifest or {}).get("sequence") if self.manifest else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

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
            "manifest_kind": self.manifest_kind,
            "pool_uuid": self.pool_uuid,
            "vm_uuid": None if self.kind == KIND_POOL else self.owner,
            "vm_name": (manifest.get("vm") or {}).get("name_label") if isinstance(manifest.get("vm"), dict) else None,
            "timestamp": self.timestamp,
            "time": iso_time(self.time) if self.time else None,
            "age_seconds": None if age is None else int(age),
            "future_dated": self.future_dated,
            "sequence": self.sequence,
            "status": self.status,
            "complete": self.complete,
            "signed": isinstance(manifest.get("signature"), dict),
            "problem": self.problem,
            "run_id": self.run_id,
            "size": self.size,
            "stored_file": self.stored_file,
            "stored_size": manifest.get("stored_size"),
            "raw_size": manifest.get("raw_size"),
            "codec": (manifest.get("codec") or {}).get("codec") if isinstance(manifest.get("codec"), dict) else None,
            "disks": list(((manifest.get("vm") or {}) if isinstance(manifest.get("vm"), dict) else {}).get("disks") or []),
            "vifs": list(((manifest.get("vm") or {}) if isinstance(manifest.get("vm"), dict) else {}).get("vifs") or []),
            "appliance": recorded_appliance(manifest),
        }


MAX_APPLIANCE_TEXT = 1024


def recorded_appliance(manifest) -> dict | None:
    """The VM appliance a backup's VM was in when it was taken: ``{uuid, name_label, name_description}``
    or None (older manifests have no ``vm.appliance``: no appliance). Untrusted: a uuid that is not
    one, or texts that are not strings, make it None; texts are bounded."""
    vm = manifest.get("vm") if isinstance(manifest, dict) else None
    app = vm.get("appliance") if isinstance(vm, dict) else None
    if not isinstance(app, dict) or not isinstance(app.get("uuid"), str) or not is_uuid(app["uuid"]):
        return None
    texts = [app.get(key, "") for key in ("name_label", "name_description")]
    if not all(isinstance(t, str) for t in texts):
        return None
    return {"uuid": app["uuid"].lower(), "name_label": texts[0][:MAX_APPLIANCE_TEXT],
            "name_description": texts[1][:MAX_APPLIANCE_TEXT]}


def classify_entry(entry: dict, ident: str, key=None, hasher=None) -> tuple[str, dict | None, str | None]:
    """Apply the status rules (docs/dev/contracts.md section 4) to one scan entry: (status, manifest, problem).

    ``hasher(rel_path, algorithm) -> (size, "algo:hex")``; None compares sizes only.
    """
    files = entry.get("files") or {}
    if entry.get("manifest_error"):
        return STATUS_UNKNOWN, None, entry["manifest_error"]
    if entry.get("manifest") is None:
        return STATUS_INCOMPLETE, None, "no manifest (incomplete)"
    try:
        manifest = parse_manifest(entry["manifest"])
    except RepositoryError as exc:
        return STATUS_UNKNOWN, entry["manifest"] if isinstance(entry["manifest"], dict) else None, exc.message
    if key is not None:
        problem = signature_problem(manifest, key)
        if problem is not None:
            return STATUS_UNTRUSTED, manifest, problem
    problem = identity_problem(manifest, ident)
    if problem is not None:
        return STATUS_UNTRUSTED, manifest, problem
    for name, info in sorted(manifest_files(manifest).items()):
        if name not in files:
            return STATUS_INCOMPLETE, manifest, "stored file %s is missing" % name
        if int(files[name]) != info["size"]:
            return STATUS_INCOMPLETE, manifest, "stored file %s has %d bytes, manifest says %d" % (name, int(files[name]), info["size"])
    if hasher is not None:
        for name, info in sorted(manifest_files(manifest).items()):
            algorithm = digest_algorithm(info["digest"])
            size, digest = hasher(ident + "/" + name, algorithm)
            if size != info["size"] or digest != info["digest"]:
                return STATUS_INCOMPLETE, manifest, "stored file %s does not match the manifest's %s digest" % (name, algorithm)
    return STATUS_COMPLETE, manifest, None


def check_entry(entry: dict, hasher=None, key=None, ident: str | None = None) -> tuple[dict | None, str | None]:
    """(manifest or None, problem or None) -- the completeness rule of :func:`classify_entry`."""
    status, manifest, problem = classify_entry(entry, ident or entry.get("id") or "", key=key, hasher=hasher)
    return manifest, (None if status == STATUS_COMPLETE else problem)


def require_repository(storage, repo: str) -> None:
    """Raise unless the repository exists (reading verbs must not report a mistyped path as empty)."""
    if not storage.exists(repo):
        raise no_repository(repo)


def no_repository(repo: str) -> RepositoryError:
    return RepositoryError("repository %s does not exist on the task's host" % repo, "NO_REPOSITORY")


def list_existing(storage, repo: str, **kwargs) -> Listing:
    """:func:`list_backups`, refused unless the repository exists: the scan itself says so
    (``repo_exists``), so a reading verb needs no second helper run to check it first."""
    backups = list_backups(storage, repo, **kwargs)
    if not backups.repo_exists:
        raise no_repository(repo)
    return backups


class Listing(list):
    """The backups of a scan (a list, oldest first) plus what the scan skipped and the marker."""

    skipped = ()
    marker = None
    repo_exists = True


#: Files hashed by one helper run (bounds its argv).
HASH_BATCH = 256


def prefetch_digests(storage, repo: str, entries: list, key=None) -> dict:
    """``{(relative path, algorithm): (size, digest)}`` of every stored file the status rules would hash,
    read in one helper run per algorithm (:meth:`HelperStorage.hash_files`).  Only entries that pass
    the size rule are hashed, exactly the files :func:`classify_entry` asks for; any failure leaves
    the hashing to it, file by file, with its own errors."""
    wanted = {}
    for entry in entries:
        ident = entry.get("id") or relative_id(repo, entry.get("path") or "")
        try:
            parse_backup_id(ident or "")
        except RepositoryError:
            continue
        status, manifest, _problem = classify_entry(entry, ident, key=key, hasher=None)
        if status != STATUS_COMPLETE:
            continue
        for name, info in sorted(manifest_files(manifest).items()):
            wanted.setdefault(digest_algorithm(info["digest"]), []).append(ident + "/" + name)
    hash_files = getattr(storage, "hash_files", None)
    out = {}
    if hash_files is None:
        return out
    for algorithm, rels in sorted(wanted.items()):
        try:
            found = hash_files(repo, rels, algorithm)
        except BackupError:
            continue  # e.g. a file replaced by a link since the scan: classify_entry reports it
        out.update(((rel, algorithm), value) for rel, value in found.items())
    return out


def list_backups(storage, repo: str, pool: str | None = None, vm: str | None = None, check_hash: bool = True,
                 key=None, now: datetime.datetime | None = None) -> Listing:
    """All backup directories under ``repo`` (optionally one pool / VM), in recorded order (oldest first).

    The returned list also carries ``skipped`` (links, odd and foreign entries the helper did not follow),
    ``marker`` and ``repo_exists``.
    """
    now = now or utcnow()
    scan = storage.scan(repo, pool=pool, vm=vm)

    digests = prefetch_digests(storage, repo, scan.get("entries") or [], key) if check_hash else {}

    def hasher(rel, algorithm):
        known = digests.get((rel, algorithm))
        return known if known is not None else storage.hash_file(repo, rel, algorithm)

    out = Listing()
    out.skipped = list(scan.get("skipped") or [])
    out.marker = scan.get("marker")
    out.repo_exists = bool(scan.get("repo_exists", True))
    for entry in scan.get("entries") or []:
        ident = entry.get("id") or relative_id(repo, entry["path"])
        try:
            parse_backup_id(ident or "")
        except RepositoryError:
            continue
        status, manifest, problem = classify_entry(entry, ident, key=key, hasher=hasher if check_hash else None)
        backup = Backup(ident, os.path.join(repo, ident), entry.get("files") or {}, manifest, status, problem, now=now)
        backup.claim = entry.get("sequence_claim")
        out.append(backup)
    out.sort(key=_sort_key)
    return out


def order_key(backup: Backup):
    """Recorded creation order: format-1 backups (no sequence) first by timestamp, then by sequence
    (the number claimed for the directory when it has no manifest yet)."""
    seq = backup.sequence if backup.sequence is not None else getattr(backup, "claim", None)
    return (seq is not None, seq or 0, backup.timestamp)


def _sort_key(backup: Backup):
    return (backup.pool_uuid, backup.owner) + order_key(backup)


def group_by_owner(backups: list) -> dict:
    """``{(pool uuid, vm uuid or "pool"): [backups oldest first]}``."""
    groups = {}
    for backup in sorted(backups, key=_sort_key):
        groups.setdefault((backup.pool_uuid, backup.owner), []).append(backup)
    return groups


def newest_complete(backups: list) -> Backup | None:
    """The complete backup with the highest sequence that is not future-dated (what "latest" means)."""
    complete = [b for b in backups if b.complete and not b.future_dated]
    return max(complete, key=order_key) if complete else None


def sweep_candidates(backups: list) -> list:
    """Incomplete backups (no manifest) whose directory holds a writer's status file: where a helper killed
    by SIGKILL may have left its ``.partial`` file. Whether the writer is gone is the helper's proof
    (``repo-sweep-partials``), from that status file, never from an age."""
    return [b for b in backups if b.manifest is None and b.status == STATUS_INCOMPLETE
            and any(name in b.files for name in WRITER_STATUS_NAMES)]


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
    """A complete backup of ``owner``: ``latest`` or a backup directory name; raise if there is none."""
    candidates = [b for b in backups if b.owner == owner]
    if which == "latest":
        found = newest_complete(candidates)
        if found is None:
            raise RepositoryError("no complete backup of %s in the repository" % owner, "NO_BACKUP")
        return found
    for backup in candidates:
        if backup.timestamp == which:
            if backup.status == STATUS_UNTRUSTED:
                raise RepositoryError("backup %s is untrusted: %s; not restored" % (backup.id, backup.problem), "UNTRUSTED_BACKUP")
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


def retention_reasons(times: list, policy: RetentionPolicy, order: list | None = None) -> dict:
    """Which of ``times`` (datetimes of complete backups) each rule keeps.

    ``order``: indexes newest first by recorded sequence (default: by time).  Returns
    ``{index: [reasons]}`` for the kept ones.  ``keep_last`` keeps the N newest; the calendar rules
    keep the newest backup of each of the N most recent days / ISO weeks / months that have a backup
    (a ``None`` time -- a future-dated backup -- fills no calendar bucket).  The newest is always kept.
    """
    if order is None:
        order = sorted(range(len(times)), key=lambda i: times[i], reverse=True)
    kept = {}
    for i in order[:policy.keep_last]:
        kept.setdefault(i, []).append("keep_last")
    dated = [i for i in order if times[i] is not None]
    for rule, count, bucket in (("keep_daily", policy.keep_daily, _day),
                                ("keep_weekly", policy.keep_weekly, _week),
                                ("keep_monthly", policy.keep_monthly, _month)):
        seen = []
        for i in dated:
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
        self.merges = []    # synthetic fulls to make first (_delta.merge_plan)
        self.merge_skipped = []
        self.cleanups = []  # (backup, [stray disk files]) of synthetic fulls

    @property
    def remove_ids(self) -> list:
        return [b.id for b, _reason in self.remove]


def plan_prune(backups: list, policy: RetentionPolicy, now: datetime.datetime, incomplete_grace: float) -> PrunePlan:
    """Decide which backups to remove.

    Complete backups of each VM (or pool dump series) are ordered by their recorded sequence and kept
    by ``policy``; the newest complete one is never removed; with an empty policy every complete
    backup is kept.  ``untrusted`` and ``unknown`` backups are never removed (nor counted).
    Incomplete backups are removed once older than ``incomplete_grace`` seconds (those whose age is
    unknown or negative are kept).
    """
    plan = PrunePlan()
    for _owner, group in sorted(group_by_owner(backups).items()):
        complete = sorted((b for b in group if b.complete), key=order_key)
        newest_first = sorted(range(len(complete)), key=lambda i: order_key(complete[i]), reverse=True)
        times = [None if b.future_dated else b.time for b in complete]
        reasons = retention_reasons(times, policy, order=newest_first)
        latest = newest_complete(complete)  # what a restore picks: never removed either
        if latest is not None:
            reasons.setdefault(complete.index(latest), []).append("latest")
        for index, backup in enumerate(complete):
            if policy.empty:
                plan.keep.append((backup, ["no retention rule"]))
            elif index in reasons:
                plan.keep.append((backup, reasons[index]))
            else:
                plan.remove.append((backup, "not kept by any retention rule"
                                    + (" (future-dated)" if backup.future_dated else "")))
        for backup in group:
            if backup.complete:
                continue
            if backup.status in (STATUS_UNTRUSTED, STATUS_UNKNOWN):
                plan.keep.append((backup, ["%s (%s): never removed" % (backup.status, backup.problem)]))
                continue
            age = backup.age(now)
            if age is not None and age > incomplete_grace:
                plan.remove.append((backup, "incomplete (%s) and older than the grace period" % backup.problem))
            else:
                plan.keep.append((backup, ["incomplete, within the grace period" if age is not None else "incomplete, age unknown"]))
    _keep_chain_links(backups, plan)
    return plan


def plan_as_if_merged(backups: list, plan: PrunePlan, policy: RetentionPolicy, now: datetime.datetime,
                      incomplete_grace: float) -> PrunePlan:
    """What a real run's second plan decides once ``plan.merges`` are made, for check mode: each merge
    target is planned as the full it becomes (same id and sequence), so the links it frees are listed as
    removals as the run removes them.  ``plan.merges`` stays what is reported as planned."""
    targets = set(m["target"] for m in plan.merges)
    if not targets:
        return plan
    after = plan_prune([_as_merged(b) if b.id in targets else b for b in backups], policy, now, incomplete_grace)
    after.merges, after.merge_skipped = plan.merges, plan.merge_skipped
    return after


def _as_merged(backup: Backup) -> Backup:
    """A copy of a delta backup whose manifest says it is a full (the merge's effect on the chain)."""
    manifest = dict(backup.manifest, delta=dict(backup.manifest["delta"], kind="full", base_backup=None, depth=0))
    merged = copy.copy(backup)
    merged.manifest = manifest
    return merged


def delta_links(backups: list) -> dict:
    """``{id: {"manifest", "problem"}}`` of the vm-delta backups of a listing (for _delta's chain functions):
    a link is usable only when complete (its files, digests, identity and signature checked)."""
    links = {}
    for backup in backups:
        if not is_delta(backup):
            continue
        entry = {"manifest": None, "problem": None if backup.complete else "%s: %s" % (backup.status, backup.problem)}
        try:
            entry["manifest"] = _delta.parse_delta_manifest(backup.manifest, backup.id)
        except _delta.ChainError as exc:
            entry["problem"] = str(exc)
        links[backup.id] = entry
    return links


def _keep_chain_links(backups: list, plan: PrunePlan) -> None:
    """Never remove a backup a kept vm-delta backup needs; plan the synthetic fulls and stray drops.

    From each kept complete delta the chain is walked down by ``base_backup``; every link met is
    kept.  A link that is missing, damaged, untrusted or unreadable stops the walk -- what it needs
    cannot be known -- so every backup of that VM recorded before it (before the delta naming it,
    when it is missing) is kept as well: damage never makes prune delete around a kept point.
    """
    by_id = dict((b.id, b) for b in backups)
    groups = group_by_owner(backups)
    kept_by_rule = set(b.id for b, _reasons in plan.keep if b.complete and is_delta(b))
    needed = {}
    for start in sorted(kept_by_rule):
        _walk_chain(by_id, groups, start, needed)
    for backup, reason in list(plan.remove):
        if backup.id in needed:
            plan.remove.remove((backup, reason))
            plan.keep.append((backup, [needed[backup.id]]))
    links = delta_links(backups)
    decided = _delta.merge_plan(links, kept_by_rule)
    plan.merges = decided["merges"]
    plan.merge_skipped = decided["skipped"]
    for backup, _reasons in plan.keep:
        if backup.complete and is_delta(backup):
            strays = _delta.stray_disk_files(backup.manifest, backup.files)
            if strays:
                plan.cleanups.append((backup, strays))


def _walk_chain(by_id, groups, start, needed):
    child, current, seen = None, start, set()
    for _unused in range(_delta.MAX_CHAIN):
        if current in seen:
            return
        seen.add(current)
        backup = by_id.get(current)
        if current != start:
            needed.setdefault(current, "needed by the kept delta backup %s" % start)
        if backup is None or not backup.complete or not is_delta(backup):
            anchor = backup if backup is not None else by_id[child]
            for other in groups.get((anchor.pool_uuid, anchor.owner), []):
                if order_key(other) < order_key(anchor):
                    needed.setdefault(other.id, "recorded before %s, a damaged or missing link of the kept delta "
                                                "backup %s: kept until the chain is repaired" % (current, start))
            if backup is None or backup.status not in (STATUS_COMPLETE, STATUS_INCOMPLETE) or not is_delta(backup):
                return  # its base_backup is unknown or untrusted: not followed
        base = backup.manifest["delta"].get("base_backup") if isinstance(backup.manifest.get("delta"), dict) else None
        if not isinstance(base, str):
            return
        child, current = current, base
