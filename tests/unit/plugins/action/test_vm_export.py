# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import contextlib
import datetime
import itertools
import hashlib
import json
import os

import pytest

try:  # the collection is on sys.path (tests/unit/conftest.py); the fakes are a sibling module
    from .repo_side_fakes import POOL, SESSION, SNAP, VM, FakeCtx, FakeRunner, FakeStorage, FakeXapi, helper_failure
except ImportError:  # plain pytest: this directory is on sys.path, not a package
    from repo_side_fakes import POOL, SESSION, SNAP, VM, FakeCtx, FakeRunner, FakeStorage, FakeXapi, helper_failure

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.module_utils import _snapshots
from ansible_collections.xapi.backup.plugins.module_utils._repository import LocalStorage
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError
from ansible_collections.xapi.backup.plugins.module_utils._errors import BackupError
from ansible_collections.xapi.backup.plugins.plugin_utils import _vm_export
from ansible_collections.xapi.backup.plugins.plugin_utils._vm_export import VmExport, adoption_action, needs_snapshot

MANIFEST = repo.MANIFEST_NAME
NOW = datetime.datetime(2026, 11, 21, 23, 59, 1, tzinfo=datetime.timezone.utc)


class FakeSnapshots:
    def __init__(self):
        self.events = []

    @staticmethod
    def validate_run_id(run_id):
        return _snapshots.validate_run_id(run_id)

    def cleanup_stale(self, xapi, run_id, vm_uuid=None):
        self.events.append("cleanup")
        return []

    def create_tagged_snapshot(self, xapi, vm_ref, run_id, now, vm_record=None):
        if xapi.check_mode:
            xapi.async_change("VM.snapshot", vm_ref, "xapi-backup")
            return _snapshots.PLANNED_SNAPSHOT
        self.events.append("snapshot")
        return "OpaqueRef:snap"

    def destroy_snapshot_with_vdis(self, xapi, ref):
        self.events.append(("destroy", ref))

    def find_our_snapshots(self, xapi, vm_uuid=None, run_id=None):
        return [("OpaqueRef:old-snap", {"uuid": SNAP, "other_config": {"xapi_backup:run": "2026-11-20"}})]

    @contextlib.contextmanager
    def block_operations(self, xapi, vm_ref, ops=_snapshots.BLOCKED_OPERATIONS, reason=_snapshots.BLOCK_REASON):
        xapi.change("VM.set_blocked_operations", vm_ref, dict((op, reason) for op in ops))
        self.events.append("block")
        try:
            yield {}
        finally:
            self.events.append("unblock")
            xapi.change("VM.set_blocked_operations", vm_ref, {})


class OrderedStorage(FakeStorage):
    """The real storage, checking that the manifest is written only once the stored file is complete."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def write_json(self, repo, path, document, exclusive=False):  # pylint: disable=redefined-outer-name
        if os.path.basename(path) == MANIFEST and not document.get("planned"):
            stored = os.path.join(os.path.dirname(path), document["stored_file"])
            info = document["files"][document["stored_file"]]
            assert exclusive is True
            assert self.hash_file(repo, stored, info["digest"].split(":")[0]) == (info["size"], info["digest"])
        self.writes.append(path)
        return super().write_json(repo, path, document, exclusive=exclusive)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    def make(power_state="Running", check_mode=False, runner=None, run_id=None, force=False):
        vm_rec = {"uuid": VM, "name_label": "web", "power_state": power_state}
        monkeypatch.setattr(_vm_export, "find_vm", lambda xapi, name: ("OpaqueRef:vm", vm_rec))
        monkeypatch.setattr(_vm_export, "describe_vm", lambda xapi, ref, rec: {"ref": ref, "uuid": VM, "name_label": "web", "disks": [], "vifs": []})
        monkeypatch.setattr(_vm_export, "pool_facts", lambda xapi: {"uuid": POOL, "name": "pool", "xapi_version": "25.1"})
        xapi = FakeXapi({"VM.get_record": lambda ref: {"uuid": SNAP, "name_label": "snap", "other_config": {"xapi_backup:time": "t"}},
                         "VM.get_by_uuid": lambda uuid: "OpaqueRef:vm"}, check_mode=check_mode)
        params = {"vm": "web", "repository": str(tmp_path), "codec": "zstd", "level": None, "threads": None,
                  "run_id": run_id, "force": force, "transfer": "local", "helper_xapi_url": "http://localhost",
                  "verify_existing": True, "poll_interval": 0.01}
        ctx = FakeCtx(params, xapi, runner or FakeRunner(), check_mode=check_mode, storage=OrderedStorage())
        snaps = FakeSnapshots()
        export = VmExport(ctx, snapshots=snaps, clock=lambda: NOW)
        ticks = itertools.count()
        export.monotonic = lambda: float(next(ticks))
        export.sleep = lambda seconds: None
        return export, ctx, xapi, snaps
    return make


def earlier_export(tmp_path, payload, stamp="20261121T220000Z"):
    """The directory of an export an earlier run started (stored file and status file, no manifest), and its result."""
    created = LocalStorage().make_backup_dir(str(tmp_path), POOL, VM, stamp)
    stamp_dir = tmp_path / created["id"]
    (stamp_dir / "vm.xva.zst").write_bytes(payload)
    (stamp_dir / repo.STATUS_NAME).write_text("{}")
    result = {"ok": True, "stored_size": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "codec": "zstd"}
    return stamp_dir, result


@pytest.mark.parametrize("state,expected", [("Running", True), ("Halted", False), ("halted", False), ("Suspended", True), ("Paused", True)])
def test_needs_snapshot(state, expected):
    assert needs_snapshot(state) is expected


ADOPTION = {
    "running": ({"alive": True}, False, "wait"),
    "finished_ok": ({"alive": False, "result": {"ok": True}}, False, "finalize"),
    "finished_failed": ({"alive": False, "result": {"ok": False}}, False, "remove"),
    "died": ({"alive": False}, False, "remove"),
    "no_status": ({"ok": False, "error": {"code": "NO_STATUS"}}, False, "remove"),
    "already_recorded": ({"alive": False, "result": {"ok": True}}, True, "ignore"),
}


@pytest.mark.parametrize("status,has_manifest,expected", list(ADOPTION.values()), ids=list(ADOPTION))
def test_adoption_action(status, has_manifest, expected):
    assert adoption_action(status, has_manifest) == expected


def test_running_vm_exported_through_snapshot_and_manifest_written_last(setup, tmp_path):
    export, ctx, xapi, snaps = setup()
    out = export.run()
    assert out["changed"] is True and out["backup_id"] == "%s/%s/20261121T235901Z" % (POOL, VM)
    assert out["run_id"] == "2026-11-21" and out["snapshot_uuid"] == SNAP and out["ratio"] == 4.0
    call = ctx.runner.calls[0]
    assert call["subcommand"] == "export" and call["args"][call["args"].index("--vm") + 1] == SNAP
    assert ctx.runner.sessions == [SESSION] and SESSION not in json.dumps(ctx.runner.calls)
    assert snaps.events == ["cleanup", "snapshot", "block", "unblock", ("destroy", "OpaqueRef:snap")]
    assert [os.path.basename(p) for p in ctx.storage.writes] == [repo.MANIFEST_NAME]
    manifest = json.loads(open(ctx.storage.writes[0]).read())
    assert manifest["snapshot"]["uuid"] == SNAP and manifest["vm"]["uuid"] == VM and "ref" not in manifest["vm"]
    assert SESSION not in open(ctx.storage.writes[0]).read()
    backups = repo.list_backups(LocalStorage(), str(tmp_path))
    assert [b.complete for b in backups] == [True]


def test_halted_vm_exported_as_is(setup):
    export, ctx, _xapi, snaps = setup(power_state="Halted")
    out = export.run()
    args = ctx.runner.calls[0]["args"]
    assert args[args.index("--vm") + 1] == VM and out["snapshot_uuid"] is None
    assert "snapshot" not in snaps.events and not any(isinstance(e, tuple) for e in snaps.events)


def test_failure_destroys_snapshot_unblocks_and_leaves_no_backup(setup, tmp_path):
    export, ctx, _xapi, snaps = setup(runner=FakeRunner(fail=helper_failure()))
    with pytest.raises(Exception, match="STREAM_TRUNCATED") as info:
        export.run()
    assert info.value.partial["vm_uuid"] == VM and info.value.partial["run_id"] == "2026-11-21"
    assert snaps.events[-2:] == ["unblock", ("destroy", "OpaqueRef:snap")]
    assert ctx.storage.writes == []
    assert repo.list_backups(LocalStorage(), str(tmp_path)) == []


def test_second_run_same_run_id_changes_nothing(setup):
    first, _ctx, _xapi, _snaps = setup(run_id="nightly")
    first.run()
    export, ctx, xapi, snaps = setup(run_id="nightly")
    out = export.run()
    assert out["changed"] is False and "exists" in out["msg"]
    assert ctx.runner.calls == [] and snaps.events == []
    assert out["stored_size"] == len(FakeRunner().payload)


def test_force_exports_again(setup):
    setup(run_id="nightly")[0].run()
    export, ctx, _xapi, _snaps = setup(run_id="nightly", force=True)
    assert export.run()["changed"] is True and ctx.runner.calls


def test_check_mode_plans_without_side_effects(setup, tmp_path):
    export, ctx, xapi, snaps = setup(check_mode=True)
    out = export.run()
    assert out["changed"] is True and out["path"].endswith("vm.xva.zst")
    assert all(c.get("planned") for c in ctx.runner.calls) and ctx.runner.sessions == []
    assert "Async.VM.snapshot" in xapi.methods(planned=True)
    assert not [m for m in xapi.methods(planned=False) if m.startswith("Async") or ".set_" in m]
    assert os.listdir(str(tmp_path)) == []


def test_adopts_finished_export_instead_of_starting_another(setup, tmp_path):
    stamp_dir, result = earlier_export(tmp_path, b"finished-by-earlier-run")
    result.update(out=str(stamp_dir / "vm.xva.zst"), raw_size=100, vm_ref="OpaqueRef:old-snap")
    runner = FakeRunner(status={"ok": True, "alive": False, "result": result})
    export, ctx, _xapi, snaps = setup(runner=runner, run_id="2026-11-20")
    out = export.run()
    assert out["changed"] is True and out["backup_id"].endswith("20261121T220000Z")
    assert [c["subcommand"] for c in ctx.runner.calls] == ["status"]
    assert ("destroy", "OpaqueRef:old-snap") in snaps.events
    assert repo.list_backups(LocalStorage(), str(tmp_path))[0].run_id == "2026-11-20"


def test_dead_earlier_export_is_removed_then_exported_anew(setup, tmp_path):
    stale, _result = earlier_export(tmp_path, b"half")
    runner = FakeRunner(status={"ok": True, "alive": False, "phase": "export"})
    export, ctx, _xapi, _snaps = setup(runner=runner)
    out = export.run()
    assert not stale.exists() and out["changed"] is True
    assert [c["subcommand"] for c in ctx.runner.calls] == ["status", "export"]


def test_snapshot_failure_reports_only_the_xapi_error(setup):
    export, _ctx, _xapi, snaps = setup()

    def sr_full(*args, **kwargs):
        raise XapiError("SR_FULL", [], "Async.VM.snapshot")

    snaps.create_tagged_snapshot = sr_full
    with pytest.raises(XapiError) as info:
        export.run()
    assert "warnings" not in info.value.partial
    assert not any(isinstance(e, tuple) for e in snaps.events)


@pytest.mark.parametrize("run_id", ["../../etc/passwd", "a/b", "", " x"])
def test_bad_run_id_refused_before_any_call(setup, run_id):
    export, ctx, xapi, _snaps = setup(run_id=run_id or "-bad")
    with pytest.raises(Exception, match="run_id"):
        export.run()
    assert xapi.calls == [] and ctx.runner.calls == []


def test_failed_export_waits_for_xapi_to_release_the_snapshot(setup):
    from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError

    failure = HelperError("helper export of web failed: STALLED: no data", "STALLED",
                          {"ok": False, "error": {"code": "STALLED"}, "task": {"ref": "OpaqueRef:export-task"}})
    export, _ctx, xapi, snaps = setup(runner=FakeRunner(fail=failure))
    busy = iter([{"OpaqueRef:export-task": "export"}, {"OpaqueRef:export-task": "export"}, {}])
    xapi.answers["VM.get_current_operations"] = lambda ref: next(busy)
    slept = []
    export.sleep = slept.append
    with pytest.raises(HelperError):
        export.run()
    methods = xapi.methods()
    assert methods.index("task.cancel") < methods.index("VM.get_current_operations")
    assert slept == [1.0, 1.0] and snaps.events[-1] == ("destroy", "OpaqueRef:snap")


def test_snapshot_already_gone_is_not_an_error(setup):
    from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError

    export, _ctx, _xapi, snaps = setup()

    def gone(_session, ref):
        raise XapiError("HANDLE_INVALID", ["VM", ref])

    snaps.destroy_snapshot_with_vdis = gone
    snaps.block_operations = contextlib.contextmanager(lambda *a: (yield {}))
    out = export.run()
    assert out["changed"] is True and "warnings" not in out


def test_live_owner_records_its_own_export_and_the_rerun_does_not_interfere(setup, tmp_path):
    stamp_dir, result = earlier_export(tmp_path, b"exported-by-the-other-run")
    result["path"] = str(stamp_dir / "vm.xva.zst")

    class OwnerAlive(FakeRunner):
        def wait(self, status_file, label, poll_interval=2.0, timeout=None):
            # meanwhile the run that started the export records it
            manifest = repo.build_manifest(
                repo.KIND_VM, tool_version="0", pool={"uuid": POOL}, xapi_version=None, run_id="2026-11-21",
                files={"vm.xva.zst": {"size": result["stored_size"], "sha256": result["sha256"]}}, stored_file="vm.xva.zst",
                started=NOW, ended=NOW, vm={"uuid": VM}, ident="%s/%s/%s" % (POOL, VM, stamp_dir.name), sequence=1)
            LocalStorage().write_json(str(tmp_path), str(stamp_dir / repo.MANIFEST_NAME), manifest, exclusive=True)
            return result

    runner = OwnerAlive(status={"ok": True, "alive": True, "phase": "export"})
    export, ctx, _xapi, snaps = setup(runner=runner)
    out = export.run()
    assert out["changed"] is False and out["backup_id"].endswith("20261121T220000Z")
    assert not any(isinstance(e, tuple) for e in snaps.events)  # the owner's snapshot is left to the owner
    assert [c["subcommand"] for c in ctx.runner.calls] == ["status"]


def test_two_exports_started_in_the_same_second_both_complete(setup, tmp_path):
    first = setup(run_id="a")[0].run()
    second = setup(run_id="b", force=True)[0].run()
    assert second["backup_id"] == first["backup_id"] + "-2"
    backups = repo.list_backups(LocalStorage(), str(tmp_path))
    expected = [(first["backup_id"], 1, "complete"), (second["backup_id"], 2, "complete")]
    assert [(b.id, b.sequence, b.status) for b in backups] == expected


def test_a_failed_export_removes_only_what_it_created(setup, tmp_path):
    """A failure in the same second as a complete backup never touches that backup."""
    good = setup(run_id="a")[0].run()
    before = open(os.path.join(str(tmp_path), good["backup_id"], repo.MANIFEST_NAME)).read()
    export, ctx, _xapi, _snaps = setup(run_id="b", runner=FakeRunner(fail=helper_failure()))
    with pytest.raises(Exception, match="STREAM_TRUNCATED"):
        export.run()
    out_arg = ctx.runner.calls[0]["args"][ctx.runner.calls[0]["args"].index("--out") + 1]
    assert out_arg.startswith(os.path.join(str(tmp_path), good["backup_id"] + "-2"))
    backups = repo.list_backups(LocalStorage(), str(tmp_path))
    assert [(b.id, b.status) for b in backups] == [(good["backup_id"], "complete")]
    assert open(os.path.join(str(tmp_path), good["backup_id"], repo.MANIFEST_NAME)).read() == before


def test_manifest_is_signed_on_the_controller_and_the_key_goes_nowhere(setup, tmp_path):
    export, ctx, _xapi, _snaps = setup()
    ctx.params["repository_key"] = "s3cret-key"
    out = export.run()
    text = open(os.path.join(str(tmp_path), out["backup_id"], repo.MANIFEST_NAME)).read()
    manifest = json.loads(text)
    assert repo.signature_problem(manifest, "s3cret-key") is None and manifest["format"] == 2
    assert "s3cret-key" not in text and "s3cret-key" not in json.dumps(ctx.runner.calls) and "s3cret-key" not in json.dumps(out)
    assert out["signed"] is True and out["sequence"] == 1


def test_helper_may_follow_redirects_only_to_pool_hosts(setup):
    export, ctx, xapi, _snaps = setup(power_state="Halted")
    xapi.answers["host.get_all_records"] = {"OpaqueRef:m": {"address": "192.0.2.1"}, "OpaqueRef:s": {"address": "192.0.2.2"}}
    export.run()
    args = ctx.runner.calls[0]["args"]
    allowed = [args[i + 1] for i, a in enumerate(args) if a == "--allow-redirect-host"]
    assert allowed == ["192.0.2.1", "192.0.2.2"]


@pytest.mark.parametrize("exported", ["OpaqueRef:old-snap", "OpaqueRef:gone", None])
def test_finalize_adopts_only_the_exported_snapshot_never_a_concurrent_runs(setup, tmp_path, exported):
    """Issue 11 item 9: another run's fresh snapshot of the same VM is neither destroyed nor its run id taken."""
    stamp_dir, result = earlier_export(tmp_path, b"finished-by-earlier-run")
    result.update(out=str(stamp_dir / "vm.xva.zst"), raw_size=100, vm_ref=exported)
    runner = FakeRunner(status={"ok": True, "alive": False, "result": result})
    export, _ctx, _xapi, snaps = setup(runner=runner, run_id="2026-11-21")
    concurrent = ("OpaqueRef:concurrent", {"uuid": "c2", "other_config": {"xapi_backup:run": "other-controller"}})
    exported_snap = ("OpaqueRef:old-snap", {"uuid": SNAP, "other_config": {"xapi_backup:run": "2026-11-20"}})
    snaps.find_our_snapshots = lambda xapi, vm_uuid=None, run_id=None: [concurrent, exported_snap]
    export.run()
    destroyed = [e[1] for e in snaps.events if isinstance(e, tuple)]
    assert "OpaqueRef:concurrent" not in destroyed
    recorded = repo.list_backups(LocalStorage(), str(tmp_path))[0].run_id
    if exported == "OpaqueRef:old-snap":
        assert destroyed[0] == "OpaqueRef:old-snap" and recorded == "2026-11-20"
    else:
        assert "OpaqueRef:old-snap" not in destroyed[:1] and recorded == "2026-11-21"


# ---------------------------------------------------------------- issue 14: what is retried, the window, the lock

from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiConnectionError, XapiError  # noqa: E402
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError as _HelperError  # noqa: E402
from ansible_collections.xapi.backup.plugins.plugin_utils._vm_export import (  # noqa: E402
    lock_problem,
    retry_reason,
    window_end,
    window_problem,
)


def _helper_failure(code, transient):
    return _HelperError("helper export failed", code, {"ok": False, "error": {"code": code, "transient": transient}})


def _reset():
    exc = XapiConnectionError("cannot talk to xapi: Connection reset by peer")
    exc.transient = True
    return exc


@pytest.mark.parametrize("exc", [
    _helper_failure("STREAM_TRUNCATED", True), _helper_failure("XAPI_UNREACHABLE", True),
    _helper_failure("XAPI_ERROR", True), XapiError("SESSION_INVALID"), XapiError("XAPI_UNREACHABLE"), _reset(),
])
def test_transient_faults_are_retried(exc):
    assert retry_reason(exc)


@pytest.mark.parametrize("exc", [
    XapiError("SR_FULL"), XapiError("VM_BAD_POWER_STATE", ["running", "halted"]), _helper_failure("SR_FULL", False),
    _helper_failure("INTERRUPTED", False), _helper_failure("BAD_XVA", None),
    XapiConnectionError("TLS certificate of https://x could not be verified"),
    _HelperError("helper export did not finish within 5s", "HELPER_TIMEOUT"),
    _HelperError("window closed", "WINDOW_CLOSED", {"error": {"transient": True}}),
])
def test_permanent_errors_are_never_retried(exc):
    assert retry_reason(exc) is None


def test_window_and_lock_rules():
    assert window_end(None, 5.0) is None and window_end(60, 5.0) == 65.0 and window_end(-3, 5.0) == 5.0
    assert window_problem(None, 10 ** 10) is None
    assert window_problem(100.0, 99.9) is None
    assert window_problem(100.0, 100.0).startswith("not started — window closed")
    assert lock_problem("t1", "t1") is None and lock_problem(None, None) is None
    assert "run cancelled" in lock_problem(None, "t1") and "another run" in lock_problem("t2", "t1")


class _WindowRunner(FakeRunner):
    """Records the time a detached export is given to run."""

    def start_detached(self, subcommand, args, status_file, session=None):
        return {"done": False, "status_file": status_file}

    def wait(self, status_file, label, poll_interval=2.0, timeout=None):
        self.waited = timeout
        return {"ok": True}


@pytest.mark.parametrize("jump", [86400, -86400], ids=["forward a day", "back a day"])
def test_a_wall_clock_jump_mid_run_neither_closes_nor_extends_the_window(tmp_path, monkeypatch, jump):
    """Review finding: the window was compared with time.time(). Now: a duration, measured on the monotonic clock."""
    import time

    clock = {"monotonic": 100.0}
    runner = _WindowRunner()
    export = VmExport(FakeCtx({"vm": VM, "repository": str(tmp_path), "job_seconds_left": 60, "retries": 0},
                              FakeXapi(), runner))
    export.monotonic = lambda: clock["monotonic"]
    seen = []

    def attempt():
        real_time = time.time()
        monkeypatch.setattr(time, "time", lambda: real_time + jump)   # the wall clock jumps mid-run
        clock["monotonic"] += 30
        export.check_may_start(POOL)                                  # still open: 30 s of 60 used
        export._run_helper(["--out", "x"], str(tmp_path / "s.json"), "export", None)
        seen.append(runner.waited)
        clock["monotonic"] += 31                                      # 61 s of 60: closed, on time
        export.check_may_start(POOL)
        return {}

    export._attempt = attempt
    with pytest.raises(BackupError) as caught:
        export.run()
    assert getattr(caught.value, "code", None) == "WINDOW_CLOSED", caught.value
    assert seen == [30.0]                                             # the export got the 30 s left, not a day more or less


# ---------------------------------------------------------------- review: partials a SIGKILLed helper left

import signal  # noqa: E402
import subprocess  # noqa: E402
import time as _time  # noqa: E402

from ansible_collections.xapi.backup.plugins.plugin_utils._vm_export import sweep_stale_partials  # noqa: E402

PARTIAL = ".vm.xva.zst.0123456789ab.partial"


def _dead_pid():
    """The pid of a process that was SIGKILLed (as a helper killed mid-export)."""
    proc = subprocess.Popen(["sleep", "60"])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.pid


@pytest.fixture
def live_helper():
    """A running process whose command line names the helper (as a detached export still writing)."""
    proc = subprocess.Popen(["bash", "-c", "exec -a /opt/xapi-backup/bin/xapi-backup-helper sleep 60"])
    for _wait in range(200):
        with open("/proc/%d/cmdline" % proc.pid, "rb") as handle:
            if b"xapi-backup-helper" in handle.read():
                break
        _time.sleep(0.01)
    yield proc.pid
    proc.kill()
    proc.wait()


def killed_export(tmp_path, pid, stamp="20261121T220000Z", status=repo.STATUS_NAME, phase="export"):
    """An export directory whose helper died: its status file (its pid, a phase still running), a partial file."""
    created = LocalStorage().make_backup_dir(str(tmp_path), POOL, VM, stamp)
    stamp_dir = tmp_path / created["id"]
    (stamp_dir / status).write_text(json.dumps({"pid": pid, "phase": phase}))
    (stamp_dir / PARTIAL).write_bytes(b"half an export")
    return stamp_dir, created["id"]


class _Verb:
    def __init__(self, tmp_path):
        self.ctx = FakeCtx({"repository": str(tmp_path)}, FakeXapi(), FakeRunner(), storage=LocalStorage())
        self.p = self.ctx.params
        self.warnings = []


def _sweep(tmp_path):
    verb = _Verb(tmp_path)
    return sweep_stale_partials(verb, repo.list_backups(verb.ctx.storage, str(tmp_path), pool=POOL, vm=VM)), verb.warnings


@pytest.mark.parametrize("status", repo.WRITER_STATUS_NAMES)
def test_a_partial_of_a_killed_helper_is_swept_and_reported(tmp_path, status):
    stamp_dir, ident = killed_export(tmp_path, _dead_pid(), status=status)
    removed, warnings = _sweep(tmp_path)
    assert removed == [ident + "/" + PARTIAL] and warnings == []
    assert not (stamp_dir / PARTIAL).exists()
    assert (stamp_dir / status).exists()         # only the partial: the directory is the adoption's/prune's to judge


def test_a_partial_of_a_running_helper_is_kept(tmp_path, live_helper):
    stamp_dir, _ident = killed_export(tmp_path, live_helper)
    removed, warnings = _sweep(tmp_path)
    assert removed == [] and (stamp_dir / PARTIAL).read_bytes() == b"half an export"
    assert warnings == []                     # a running export's partial is normal: the adoption waits for it
    kept = LocalStorage().sweep_partials(str(tmp_path), _ident)["kept"]
    assert [k["reason"] for k in kept] == ["its writer is not proven gone (status file)"]


def test_without_a_status_file_nothing_is_proven_and_nothing_goes(tmp_path):
    stamp_dir, _ident = killed_export(tmp_path, _dead_pid())
    os.unlink(str(stamp_dir / repo.STATUS_NAME))
    # an old mtime proves nothing either
    os.utime(str(stamp_dir / PARTIAL), (0, 0))
    removed, _warnings = _sweep(tmp_path)
    assert removed == [] and (stamp_dir / PARTIAL).exists()


def test_a_status_file_that_is_a_link_proves_nothing(tmp_path):
    stamp_dir, _ident = killed_export(tmp_path, _dead_pid())
    elsewhere = tmp_path.parent / ("%s-status.json" % tmp_path.name)
    elsewhere.write_text(json.dumps({"pid": _dead_pid(), "phase": "done"}))
    os.unlink(str(stamp_dir / repo.STATUS_NAME))
    os.symlink(str(elsewhere), str(stamp_dir / repo.STATUS_NAME))
    removed, _warnings = _sweep(tmp_path)
    assert removed == [] and (stamp_dir / PARTIAL).exists()


def test_lookalikes_are_left_alone_and_named(tmp_path):
    """A link, a directory or a near name beside a dead writer's partial: only the real partial goes."""
    stamp_dir, ident = killed_export(tmp_path, _dead_pid())
    victim = tmp_path.parent / ("%s-victim" % tmp_path.name)
    victim.write_bytes(b"not the repository's")
    link = ".vm.xva.zst.aaaaaaaaaaaa.partial"
    os.symlink(str(victim), str(stamp_dir / link))
    folder = ".vm.xva.zst.bbbbbbbbbbbb.partial"
    (stamp_dir / folder).mkdir()
    (stamp_dir / folder / "inside").write_bytes(b"x")
    near = [".vm.xva.zst.partial", "notes.partial", ".vm.xva.zst.0123456789ab.partial.keep", ".passwd.0123456789ab.partial"]
    for name in near:
        (stamp_dir / name).write_bytes(b"someone's")
    # outside our layout: in the VM's directory, beside the repository's backups, outside the repository
    outside = [stamp_dir.parent / PARTIAL, tmp_path / PARTIAL, tmp_path.parent / PARTIAL]
    for path in outside:
        path.write_bytes(b"not in a backup directory")
    removed, warnings = _sweep(tmp_path)
    assert removed == [ident + "/" + PARTIAL]
    assert victim.read_bytes() == b"not the repository's" and os.path.islink(str(stamp_dir / link))
    assert (stamp_dir / folder / "inside").exists()
    assert all((stamp_dir / name).read_bytes() == b"someone's" for name in near)
    assert all(path.exists() for path in outside)
    assert sum(1 for w in warnings if w.startswith("left ")) == 2 + len(near)   # each lookalike is named
    for path in outside:
        path.unlink()


def test_a_backup_with_a_manifest_is_never_swept(tmp_path):
    stamp_dir, ident = killed_export(tmp_path, _dead_pid())
    storage = LocalStorage()
    with pytest.raises(repo.RepositoryError) as caught:
        (stamp_dir / repo.MANIFEST_NAME).write_text("{}")
        storage.sweep_partials(str(tmp_path), ident)
    assert caught.value.code == "REFUSED" and (stamp_dir / PARTIAL).exists()


def test_the_next_run_of_the_vm_sweeps_before_it_exports(setup, tmp_path):
    stamp_dir, ident = killed_export(tmp_path, _dead_pid(), stamp="20261121T210000Z")
    runner = FakeRunner(status={"ok": True, "alive": False, "phase": "export"})
    export, ctx, _xapi, _snaps = setup(runner=runner)
    ctx.storage = LocalStorage()
    out = export.run()
    assert out["stale_partials_removed"] == [ident + "/" + PARTIAL]
    assert not (stamp_dir / PARTIAL).exists()
