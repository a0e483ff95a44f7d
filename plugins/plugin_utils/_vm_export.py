# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vm_export: one VM into the repository through a tagged snapshot and the helper.

PRIVATE to the collection: not a public API.

Order of a real run: find the VM; list its backups; adopt an export still under way (or finished
but not recorded) for this VM instead of starting a second one; decide (``export_reason``); take
the snapshot (unless the VM is halted); block migration; start the helper detached and poll it;
write the manifest LAST; destroy the snapshot and its VDIs in every outcome.
"""

from __future__ import annotations

import os
import time

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.module_utils import _snapshots
from ansible_collections.xapi.backup.plugins.module_utils._constants import DEFAULT_POLL_INTERVAL
from ansible_collections.xapi.backup.plugins.module_utils._errors import BackupError
from ansible_collections.xapi.backup.plugins.module_utils._option_specs import EXPORT, helper_flags
from ansible_collections.xapi.backup.plugins.module_utils._selection import describe_vm, find_vm
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiConnectionError, XapiError
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError, is_planned
from ansible_collections.xapi.backup.plugins.plugin_utils._xapi_facts import TOOL_VERSION, helper_xapi_args, pool_facts, redirect_host_args

SNAPSHOT_RELEASE_WAIT = 120.0


#: xapi error codes a retry may cure (issue 14): the session was evicted or the host is coming back.
#: SR_FULL, VM_BAD_POWER_STATE and every other code are permanent: never retried.
TRANSIENT_XAPI_CODES = frozenset(("SESSION_INVALID", "XAPI_UNREACHABLE", "HOST_OFFLINE", "HOST_STILL_BOOTING",
                                  "TOO_MANY_PENDING_TASKS"))
#: Failures that end the run rather than the VM: never retried.
WINDOW_CLOSED = "WINDOW_CLOSED"
RUN_CANCELLED = "RUN_CANCELLED"
#: Seconds ``cancel`` waits for a signalled helper to cancel its task and remove its partial file.
CANCEL_WAIT = 60
#: Token that no run lock carries (tokens are ``t<digits>``): ``repo-lock --take-over`` with it only reads the owner.
LOCK_PROBE_TOKEN = "probe:not-a-token"


def retry_reason(exc) -> str | None:
    """Why a failed attempt may be retried (None: it is permanent and fails the VM now).

    Transient: the helper's ``error.transient`` (connection reset or stall mid-export, session lost),
    a connection to xapi that broke (reset, refused), and the codes of :data:`TRANSIENT_XAPI_CODES`.
    """
    code = getattr(exc, "code", None)
    if code in (WINDOW_CLOSED, RUN_CANCELLED):
        return None
    if isinstance(exc, HelperError):
        error = (exc.result or {}).get("error")
        if isinstance(error, dict) and error.get("transient") is True:
            return "the helper reports a transient fault (%s)" % error.get("code")
        return None
    if isinstance(exc, XapiConnectionError) and getattr(exc, "transient", False):
        return "the connection to xapi broke"
    if isinstance(exc, XapiError) and code in TRANSIENT_XAPI_CODES:
        return "xapi answered %s" % code
    return None


def window_end(seconds_left, now) -> float | None:
    """When (on the monotonic clock ``now`` reads) the backup window closes; None: no window."""
    return None if seconds_left is None else now + max(0.0, float(seconds_left))


def window_problem(end, now) -> str | None:
    """Why no new export may start (None: the backup window is still open). ``end``, ``now``: monotonic."""
    if end is not None and now >= end:
        return "not started — window closed (xapi_backup_job_timeout reached %d s ago)" % int(now - end)
    return None


def lock_problem(owner_token, expected) -> str | None:
    """Why the run no longer holds its pool's run lock (None: it still does)."""
    if expected and owner_token != expected:
        return ("not started — run cancelled: the pool's run lock is %s (released by xapi.backup.cancel or taken over)"
                % ("held by another run" if owner_token else "gone"))
    return None


def needs_snapshot(power_state: str) -> bool:
    """A halted VM is exported as is; any other state goes through a snapshot."""
    return str(power_state).lower() != "halted"


def ratio(raw_size, stored_size):
    if not raw_size or not stored_size:
        return None
    return round(float(raw_size) / float(stored_size), 3)


def running_candidates(backups: list) -> list:
    """Incomplete backups (no manifest) that carry a helper status file, newest first (claimed order)."""
    found = [b for b in backups if b.status == repo.STATUS_INCOMPLETE and b.manifest is None and repo.STATUS_NAME in b.files]
    return sorted(found, key=lambda b: (b.claim or 0, b.timestamp), reverse=True)


def adoption_action(status: dict, has_manifest: bool) -> str:
    """What to do with an earlier export found through its status file.

    ``wait`` (still running), ``finalize`` (finished well but no manifest yet), ``remove`` (died or
    failed: an incomplete backup), ``ignore`` (already recorded).
    """
    if has_manifest:
        return "ignore"
    result = status.get("result")
    if isinstance(result, dict):
        return "finalize" if result.get("ok") is True else "remove"
    if status.get("alive") is True:
        return "wait"
    return "remove"


def _sha256_of(manifest):
    digest = ((manifest.get("files") or {}).get(manifest.get("stored_file")) or {}).get("digest") or ""
    return digest.split(":", 1)[1] if digest.startswith("sha256:") else None


def exported_snapshot(ref, result) -> bool:
    """Whether snapshot ``ref`` is the VM the helper exported (its result's ``vm_ref``)."""
    return bool(ref) and isinstance(result, dict) and result.get("vm_ref") == ref


def sweep_stale_partials(verb, backups) -> list:
    """Before a VM target's export: remove the ``.partial`` files helpers killed by SIGKILL left in this
    VM's incomplete backups (the helper proves each writer gone from its status file; links, directories
    and foreign names are kept and named in a warning). Returns the removed paths (repository-relative)."""
    removed = []
    for backup in repo.sweep_candidates(backups):
        try:
            swept = verb.ctx.storage.sweep_partials(verb.p["repository"], backup.id)
        except (HelperError, repo.RepositoryError) as exc:
            verb.warnings.append("could not sweep the partial files of %s: %s" % (backup.id, exc))
            continue
        removed += list(swept.get("removed") or [])
        # a live writer's partial is normal (the adoption waits for it); a lookalike is worth a warning
        verb.warnings += ["left %s alone: %s" % (k.get("path"), k.get("reason")) for k in swept.get("kept") or []
                          if swept.get("proof")]
    return removed


def run_keeping_partial(verb, run) -> dict:
    """``run()``, whose failure carries what ``verb`` knew by then: its ``partial`` (VM, then run id,
    pool, ...) and its ``warnings``. The one wrapper of the full (XVA) and the delta export."""
    verb.partial = {"vm": verb.p["vm"]}
    try:
        return run()
    except BackupError as exc:
        exc.add_partial(**dict(verb.partial, **({"warnings": list(verb.warnings)} if verb.warnings else {})))
        raise


class VmExport:
    """One vm_export task.  ``ctx`` is a ``_action.ActionContext``."""

    def __init__(self, ctx, snapshots=_snapshots, clock=repo.utcnow):
        self.ctx = ctx
        self.p = ctx.params
        self.snapshots = snapshots  # the _snapshots service (tests pass a fake)
        self.clock = clock
        self.warnings = []
        self.removed_snapshots = []
        self.partials_removed = []
        self.sleep = time.sleep
        self.monotonic = time.monotonic
        self.release_wait = SNAPSHOT_RELEASE_WAIT
        self.window_end = None  # monotonic; set from job_seconds_left as run() starts

    # ------------------------------------------------------------ entry point

    def run(self) -> dict:
        """The task's result; on failure the error's ``partial`` carries what is known (VM, run id, pool).

        Attempts the export up to 1 + ``retries`` times: again only after a transient fault
        (:func:`retry_reason`), ``retry_delay`` seconds later and only while the window is open. Each
        attempt cleans up its own partial file and snapshot before the next; ``attempts`` lists them.
        """
        # the window: a duration from the plan, measured from here on the monotonic clock (never the wall clock)
        self.window_end = window_end(self.p.get("job_seconds_left"), self.monotonic())
        retries = int(self.p.get("retries") or 0)
        attempts = []
        number = 0
        while True:
            number += 1
            try:
                out = self._attempt()
            except BackupError as exc:
                reason = None if self.ctx.check_mode else retry_reason(exc)
                attempts.append({"attempt": number, "ok": False, "code": exc.code, "msg": exc.message,
                                 "transient": reason is not None})
                if reason is None or number > retries or self._no_time_for_retry():
                    exc.add_partial(attempts=attempts)
                    raise
                if self.ctx.display is not None:
                    self.ctx.display.display("export of %s: attempt %d failed (%s); retrying in %s s"
                                             % (self.p["vm"], number, reason, self.p.get("retry_delay") or 0))
                self.sleep(float(self.p.get("retry_delay") or 0))
                continue
            attempts.append({"attempt": number, "ok": True})
            out["attempts"] = attempts
            return out

    def _no_time_for_retry(self) -> bool:
        return self.window_end is not None and self.monotonic() + float(self.p.get("retry_delay") or 0) >= self.window_end

    def _attempt(self) -> dict:
        if self.p.get("mode", "full") == "delta":  # VHD chains: _vm_delta.py (issue 12)
            from ansible_collections.xapi.backup.plugins.plugin_utils._vm_delta import VmDeltaExport
            return VmDeltaExport(self.ctx, xva_export=self._run_xva, snapshots=self.snapshots, clock=self.clock).run()
        return self._run_xva()

    def check_may_start(self, pool_uuid) -> None:
        """Refuse to start an export once the window closed or the run lost its lock (before any side effect)."""
        if self.ctx.check_mode:
            return
        problem = window_problem(self.window_end, self.monotonic())
        if problem:
            raise BackupError(problem, code=WINDOW_CLOSED)
        token = self.p.get("run_lock_token")
        if token:
            owner = self.ctx.storage.lock(self.p["repository"], pool_uuid, {"token": LOCK_PROBE_TOKEN},
                                          take_over=LOCK_PROBE_TOKEN).get("owner") or {}
            problem = lock_problem(owner.get("token"), token)
            if problem:
                raise BackupError(problem, code=RUN_CANCELLED)

    def _run_xva(self) -> dict:
        return run_keeping_partial(self, self._run)

    def _run(self) -> dict:
        p = self.p
        now = self.clock()
        run_id = _snapshots.resolve_run_id(p.get("run_id"), now)
        with self.ctx.xapi() as xapi:
            vm_ref, vm_rec = find_vm(xapi, p["vm"])
            pool = pool_facts(xapi)
            base = {"vm_uuid": vm_rec["uuid"], "vm_name": vm_rec.get("name_label"), "run_id": run_id,
                    "pool_uuid": pool["uuid"], "repository": p["repository"]}
            self.partial.update(base)
            self.check_may_start(pool["uuid"])
            backups = self._backups(pool["uuid"], vm_rec["uuid"])
            self.partials_removed = sweep_stale_partials(self, backups)
            adopted = None if self.ctx.check_mode else self._adopt(xapi, pool, vm_rec, run_id, backups)
            if adopted is not None or (running_candidates(backups) and not self.ctx.check_mode):
                backups = self._backups(pool["uuid"], vm_rec["uuid"])  # earlier exports may have been recorded
            reason = repo.export_reason(backups, vm_rec["uuid"], run_id, p.get("force", False))
            if reason is None:
                existing = repo.find_run_backup(backups, vm_rec["uuid"], run_id)
                out = self._describe(existing, changed=adopted is not None and adopted.id == existing.id)
                out.update(base)
                out["msg"] = ("finished the export that was already under way: %s" % existing.id if out["changed"]
                              else "a complete backup of this VM for run %s exists: %s" % (run_id, existing.id))
                return self._finish(out)
            # one code path in check mode: xapi.change / async_change and the runner plan the side effects
            out = self._export(xapi, vm_ref, vm_rec, pool, run_id, self.clock())
            out.update(base)
            out["msg"] = reason
            return self._finish(out)

    def _finish(self, out):
        out["stale_partials_removed"] = list(self.partials_removed)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    def _backups(self, pool_uuid, vm_uuid):
        return repo.list_backups(self.ctx.storage, self.p["repository"], pool=pool_uuid, vm=vm_uuid,
                                 check_hash=self.p.get("verify_existing", True), key=self.p.get("repository_key"))

    # ------------------------------------------------------------ paths and plan

    def _paths(self, pool_uuid, vm_uuid, now, created=None):
        """Paths of a new backup; ``created`` is repo-mkbackup's answer (the directory really made, its sequence)."""
        ident = created["id"] if created else repo.backup_id(pool_uuid, vm_uuid, repo.timestamp_name(now))
        directory = os.path.join(self.p["repository"], ident)
        return {
            "id": ident,
            "dir": directory,
            "out": os.path.join(directory, repo.stored_name(self.p["codec"])),
            "status": os.path.join(directory, repo.STATUS_NAME),
            "manifest": os.path.join(directory, repo.MANIFEST_NAME),
            "sequence": (created or {}).get("sequence"),
            "repository_id": (created or {}).get("repository_id"),
        }

    # ------------------------------------------------------------ a new export

    def _helper_args(self, xapi, vm_uuid, out):
        p = self.p
        args = helper_xapi_args(p, xapi.url, self.ctx.connection_is_local) + redirect_host_args(xapi)
        args += ["--vm", vm_uuid, "--out", out, "--codec", p["codec"]]
        return args + helper_flags(EXPORT, p)  # the tuning options, declared once in _option_specs

    def _export(self, xapi, vm_ref, vm_rec, pool, run_id, now):
        summary = describe_vm(xapi, vm_ref, vm_rec)
        snap_ref = snap_rec = None
        failure = None
        paths = None
        try:
            # created exclusively, with a fresh sequence number: a failed export removes only this directory
            created = self.ctx.storage.make_backup_dir(self.p["repository"], pool["uuid"], vm_rec["uuid"], repo.timestamp_name(now))
            paths = self._paths(pool["uuid"], vm_rec["uuid"], now, created)
            self.removed_snapshots = self.snapshots.cleanup_stale(xapi, run_id, vm_uuid=vm_rec["uuid"])
            if needs_snapshot(vm_rec.get("power_state")):
                snap_ref = self.snapshots.create_tagged_snapshot(xapi, vm_ref, run_id, now, vm_record=vm_rec)
                if snap_ref != _snapshots.PLANNED_SNAPSHOT:  # check mode: there is no snapshot to read
                    snap_rec = xapi.call("VM.get_record", snap_ref)
                source_uuid = snap_rec["uuid"] if snap_rec else (snap_ref if snap_ref else vm_rec["uuid"])
            else:
                source_uuid = vm_rec["uuid"]
            with self.snapshots.block_operations(xapi, vm_ref):
                started = self.clock()
                result = self._run_helper(self._helper_args(xapi, source_uuid, paths["out"]), paths["status"],
                                          "export of %s" % vm_rec.get("name_label"), xapi.session_ref)
            manifest = None
            if not is_planned(result):  # check mode: no export ran, there is nothing to record
                manifest = self._manifest(pool, summary, snap_rec, run_id, result, started, self.clock(),
                                          paths["id"], paths["sequence"], paths["repository_id"])
            # the same step in check mode, where the runner only plans it
            self.ctx.storage.write_json(self.p["repository"], paths["manifest"], manifest or {"planned": True},
                                        exclusive=True)
        except BaseException as exc:
            failure = exc
            if paths is not None:
                self._discard(paths, exc)
            raise
        finally:
            if snap_ref is not None:
                self._destroy_snapshot(xapi, snap_ref, failing=failure is not None, failure=failure)
        out = self._result_fields(result, manifest) if manifest else {}
        out.update(changed=True, backup_id=paths["id"],
                   path=os.path.join(paths["dir"], manifest["stored_file"]) if manifest else paths["out"],
                   snapshot_uuid=snap_rec["uuid"] if snap_rec else None,
                   stale_snapshots_removed=[s.get("uuid") for s in self.removed_snapshots or []])
        return out

    def _run_helper(self, args, status_file, label, session):
        """Run the helper detached and wait for it, at most until the job deadline.

        When the window closes mid-export the helper is cancelled through its status file (it cancels
        its xapi task and removes its partial file); the caller then removes the directory and the
        snapshot. A helper that does not stop within :data:`CANCEL_WAIT` keeps its directory.
        """
        poll = self.p.get("poll_interval", DEFAULT_POLL_INTERVAL)
        timeout = self.p.get("export_timeout")
        window = None if self.window_end is None else max(1.0, self.window_end - self.monotonic())
        by_window = window is not None and (timeout is None or window < timeout)
        if not by_window:
            return self.ctx.runner.run_long("export", args, status_file, label, session=session, poll_interval=poll,
                                            timeout=timeout)
        started = self.ctx.runner.start_detached("export", args, status_file, session=session)
        if started["done"]:
            return started["result"]
        try:
            return self.ctx.runner.wait(started["status_file"], label, poll_interval=poll, timeout=window)
        except HelperError as exc:
            if exc.code != "HELPER_TIMEOUT":
                raise
            cancel = self.ctx.runner.run("cancel", ["--status-file", status_file, "--wait", str(CANCEL_WAIT)], check=False)
            final = cancel.get("result") if isinstance(cancel.get("result"), dict) else exc.result
            if cancel.get("cancelled") is False and isinstance(final, dict) and final.get("ok") is True:
                return final  # it finished just as the window closed: a good backup is kept
            stopped = bool(cancel.get("finished")) or cancel.get("cancelled") is False
            error = HelperError("%s cancelled: window closed (xapi_backup_job_timeout)%s"
                                % (label, "" if stopped else "; the helper did not stop, its directory is kept"),
                                WINDOW_CLOSED if stopped else "HELPER_TIMEOUT", final)
            raise error from None

    def _discard(self, paths, exc):
        """Remove the directory of a failed export (never one whose helper may still be running)."""
        if self.ctx.check_mode or (isinstance(exc, HelperError) and exc.code == "HELPER_TIMEOUT"):
            return  # check mode created nothing: a directory there belongs to someone else
        try:
            self.ctx.storage.remove_backup(self.p["repository"], paths["id"], if_incomplete=True)
        except (HelperError, repo.RepositoryError) as cleanup_exc:
            if cleanup_exc.code != "NOT_FOUND":  # nothing was written: nothing to remove
                self.warnings.append("could not remove the incomplete backup %s: %s" % (paths["dir"], cleanup_exc))
        except Exception as cleanup_exc:  # pylint: disable=broad-except  # the export's error is the one to report
            self.warnings.append("could not remove the incomplete backup %s: %s" % (paths["dir"], cleanup_exc))

    def _destroy_snapshot(self, xapi, snap_ref, failing, failure=None):
        """Destroy our snapshot and its VDIs; a snapshot already gone is fine.

        After a failed export xapi's export task may still hold the snapshot (it ends at its next
        write): cancel the task the helper reports, and wait (bounded) for the snapshot to be free.
        """
        try:
            if failing and not self._release(xapi, snap_ref, failure):
                return
            # clears blocked_operations the snapshot inherited from the VM (a blocked destroy would leak it)
            self.snapshots.destroy_snapshot_with_vdis(xapi, snap_ref)
        except XapiError as exc:
            if exc.code == "HANDLE_INVALID":
                return  # destroyed meanwhile (by a run that adopted this export)
            if not failing:
                raise
            self.warnings.append("could not destroy snapshot %s: %s" % (snap_ref, exc))
        except Exception as exc:  # pylint: disable=broad-except
            if not failing:
                raise
            self.warnings.append("could not destroy snapshot %s: %s" % (snap_ref, exc))

    def _release(self, xapi, snap_ref, failure):
        """Cancel the failed export's task and wait until no operation holds the snapshot.

        Returns False when the snapshot is already gone.
        """
        if snap_ref == _snapshots.PLANNED_SNAPSHOT:
            return True  # check mode: no export task holds a planned snapshot
        result = getattr(failure, "result", None) or {}
        task = (result.get("task") or {}).get("ref") or (result.get("error") or {}).get("task")
        if task:
            try:
                xapi.call("task.cancel", task)
            except XapiError:
                pass  # finished or gone already
        deadline = self.monotonic() + self.release_wait
        while True:
            try:
                if not xapi.call("VM.get_current_operations", snap_ref):
                    return True
            except XapiError as exc:
                if exc.code == "HANDLE_INVALID":
                    return False
                raise
            if self.monotonic() >= deadline:
                return True  # try anyway; a failure becomes a warning
            self.sleep(1.0)

    # ------------------------------------------------------------ manifest and result

    def _manifest(self, pool, summary, snap_rec, run_id, result, started, ended, ident, sequence, repository_id):
        name = os.path.basename(result.get("path") or result.get("out") or "") or repo.stored_name(result.get("codec") or self.p["codec"])
        # the helper's in-stream hash of the stored bytes (a "digest" field, e.g. blake2b, when it sends one)
        digest = result.get("digest") or "sha256:%s" % result["sha256"]
        files = {name: {"size": int(result["stored_size"]), "digest": str(digest)}}
        vm = dict(summary)
        vm.pop("ref", None)
        snapshot = None
        if snap_rec is not None:
            snapshot = {"uuid": snap_rec.get("uuid"), "name": snap_rec.get("name_label"),
                        "time": (snap_rec.get("other_config") or {}).get(_snapshots.TIME_KEY)}
        manifest = repo.build_manifest(
            repo.MANIFEST_KIND_VM_XVA, tool_version=TOOL_VERSION, pool={"uuid": pool["uuid"], "name": pool["name"]},
            xapi_version=pool.get("xapi_version"), run_id=run_id, files=files, stored_file=name,
            started=started, ended=ended, vm=vm, snapshot=snapshot,
            codec={"codec": result.get("codec"), "level": result.get("level"), "threads": result.get("threads"),
                   "compressor": result.get("compressor")},
            raw_size=result.get("raw_size"), raw_hash=result.get("raw_hash"), helper_result=result,
            ident=ident, sequence=sequence, repository_id=repository_id,
        )
        return repo.seal_manifest(manifest, self.p.get("repository_key"))

    @staticmethod
    def _result_fields(result, manifest):
        return {
            "raw_size": manifest.get("raw_size"),
            "stored_size": manifest.get("stored_size"),
            "sha256": manifest.get("sha256") or _sha256_of(manifest),
            "digest": ((manifest.get("files") or {}).get(manifest.get("stored_file")) or {}).get("digest"),
            "sequence": manifest.get("sequence"),
            "signed": isinstance(manifest.get("signature"), dict),
            "ratio": ratio(manifest.get("raw_size"), manifest.get("stored_size")),
            "duration": manifest.get("duration"),
            "rate": manifest.get("rate"),
            "codec": (manifest.get("codec") or {}).get("codec"),
            "helper_result": repo.strip_secrets(result),
        }

    def _describe(self, backup, changed):
        manifest = backup.manifest or {}
        out = self._result_fields(manifest.get("helper_result") or {}, manifest)
        out.update(changed=changed, backup_id=backup.id, path=backup.stored_path,
                   snapshot_uuid=(manifest.get("snapshot") or {}).get("uuid"))
        return out

    # ------------------------------------------------------------ adopting an earlier export

    def _adopt(self, xapi, pool, vm_rec, run_id, backups):
        """Wait for / record / clean up earlier exports of this VM; return the backup recorded, if any."""
        adopted = None
        for backup in running_candidates(backups):
            status_file = os.path.join(backup.path, repo.STATUS_NAME)
            status = self.ctx.runner.run("status", ["--status-file", status_file], check=False)
            action = adoption_action(status, backup.manifest is not None)
            if action == "wait":
                result = self.ctx.runner.wait(status_file, "earlier export of %s" % vm_rec.get("name_label"),
                                              poll_interval=self.p.get("poll_interval", DEFAULT_POLL_INTERVAL),
                                              timeout=self.p.get("export_timeout"))
                status = {"result": result}
                action = "finalize"
            if action == "finalize" and self._recorded_by_owner(backup):
                continue  # the run that started it is alive and wrote the manifest: nothing to adopt
            if action == "finalize":
                adopted = self._finalize(xapi, pool, vm_rec, run_id, backup, status["result"]) or adopted
            elif action == "remove":
                self._remove_dead(backup)
        return adopted

    def _remove_dead(self, backup):
        """Remove the directory of an export that died (only while it still has no manifest)."""
        try:
            self.ctx.storage.remove_backup(self.p["repository"], backup.id, if_incomplete=True)
        except (HelperError, repo.RepositoryError) as exc:
            self.warnings.append("left the incomplete backup %s: %s" % (backup.id, exc))

    def _recorded_by_owner(self, backup):
        """Give the run that started an export a moment to record it (write its manifest) itself."""
        deadline = self.monotonic() + 3 * float(self.p.get("poll_interval", DEFAULT_POLL_INTERVAL)) + 5.0
        while True:
            for entry in self.ctx.storage.scan(self.p["repository"], pool=backup.pool_uuid, vm=backup.owner)["entries"]:
                if entry.get("id") == backup.id and entry.get("manifest") is not None:
                    return True
            if self.monotonic() >= deadline:
                return False
            self.sleep(1.0)

    def _finalize(self, xapi, pool, vm_rec, run_id, backup, result):
        """Write the manifest of an export that finished without one; destroy its snapshot.

        The export's own snapshot is the one the helper exported (``vm_ref`` of its result): only its
        run id is adopted and only it is destroyed. Other snapshots of ours of this VM may belong to a
        concurrent run (another run id) and are left to ``cleanup_stale``'s age rule.
        """
        owned = [(ref, rec) for ref, rec in self.snapshots.find_our_snapshots(xapi, vm_uuid=vm_rec["uuid"])
                 if exported_snapshot(ref, result)]
        snap_ref, snap_rec = (owned[0] if owned else (None, None))
        if snap_rec is not None:
            run_id = (snap_rec.get("other_config") or {}).get(_snapshots.RUN_KEY, run_id)
        try:
            summary = describe_vm(xapi, xapi.call("VM.get_by_uuid", vm_rec["uuid"]), None)
            if backup.claim is None:
                self._remove_dead(backup)  # not created by repo-mkbackup: no sequence to record it under
                return None
            started = backup.time or self.clock()
            manifest = self._manifest(pool, summary, snap_rec, run_id, result, started, self.clock(),
                                      backup.id, backup.claim, None)
            stored = manifest["files"][manifest["stored_file"]]
            size, digest = self.ctx.storage.hash_file(self.p["repository"], backup.stored_path or os.path.join(backup.path, manifest["stored_file"]),
                                                      repo.digest_algorithm(stored["digest"]))
            if size != stored["size"] or digest != stored["digest"]:
                self._remove_dead(backup)
                return None
            self.ctx.storage.write_json(self.p["repository"], os.path.join(backup.path, repo.MANIFEST_NAME), manifest, exclusive=True)
            return backup
        finally:
            for ref, rec in owned:
                if not rec.get("current_operations"):  # one still being exported belongs to a live run
                    self._destroy_snapshot(xapi, ref, failing=True)
