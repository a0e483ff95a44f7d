# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil

import pytest

try:  # the collection is on sys.path (tests/unit/conftest.py); the fakes are a sibling module
    from .repo_side_fakes import POOL, SESSION, VM, FakeCtx, FakeRunner, FakeStorage, FakeXapi
except ImportError:  # plain pytest: this directory is on sys.path, not a package
    from repo_side_fakes import POOL, SESSION, VM, FakeCtx, FakeRunner, FakeStorage, FakeXapi

from ansible_collections.xapi.backup.plugins.module_utils import _repository as repo
from ansible_collections.xapi.backup.plugins.module_utils._repository import LocalStorage, RepositoryError
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError, XapiUsageError
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError as _HelperError
from ansible_collections.xapi.backup.plugins.plugin_utils._vm_import import (
    RESTORED_FROM,
    VmImport,
    import_reason,
    resolve_backup,
)

STAMP = "20261121T235901Z"
IDENT = "%s/%s/%s" % (POOL, VM, STAMP)
NEW_VM = "dddddddd-0000-0000-0000-000000000004"


def write_backup(root, payload=b"stored-xva", stamp=STAMP, vifs=None, key=None, owner=VM):
    """A backup made the way vm_export makes one: repo-mkbackup, the data, the (signed) manifest last."""
    when = repo.parse_timestamp(stamp)
    storage = LocalStorage()
    created = storage.make_backup_dir(str(root), POOL, owner, stamp)
    directory = os.path.join(str(root), created["id"])
    with open(os.path.join(directory, "vm.xva.zst"), "wb") as handle:
        handle.write(payload)
    manifest = repo.build_manifest(
        repo.KIND_VM, tool_version="0.1.0", pool={"uuid": POOL, "name": "p"}, xapi_version="25", run_id="r",
        files={"vm.xva.zst": {"size": len(payload), "digest": repo.digest_of(payload)}},
        stored_file="vm.xva.zst", started=when, ended=when + datetime.timedelta(seconds=1),
        vm={"uuid": owner, "name_label": "web", "vifs": vifs or []}, ident=created["id"], sequence=created["sequence"])
    storage.write_json(str(root), os.path.join(directory, repo.MANIFEST_NAME), repo.seal_manifest(manifest, key),
                       exclusive=True)
    return directory


def params(root, **extra):
    base = {"repository": str(root), "backup": None, "vm_uuid": VM, "timestamp": "latest", "state": "present",
            "sr": None, "preserve_identity": False, "remove_vifs": False, "network_map": {}, "name": None, "tags": ["drill"], "start": False, "force": False,
            "transfer": "local", "helper_xapi_url": "http://localhost", "poll_interval": 0.01}
    base.update(extra)
    return base


def xapi_with(vms, check_mode=False):
    return FakeXapi({
        "VM.get_all_records": lambda: dict(vms),
        "VM.get_record": lambda ref: {"uuid": NEW_VM, "name_label": "web", "power_state": "Halted"},
        "VM.get_VIFs": lambda ref: ["OpaqueRef:vif0", "OpaqueRef:vif1"],
        "VIF.get_record": lambda ref: {"device": ref[-1], "network": "OpaqueRef:net-old", "MAC": "aa:%s" % ref[-1], "MTU": "1500"},
        "network.get_by_uuid": lambda uuid: "OpaqueRef:net-new",
        "network.get_by_name_label": lambda name: ["OpaqueRef:net-%s" % name] if name != "missing" else [],
    }, check_mode=check_mode)


REASONS = {
    "nothing_there": ({}, False, False, True),
    "restored_already": ({"r1": {"uuid": "x", "other_config": {RESTORED_FROM: IDENT}}}, False, False, False),
    "restored_already_force": ({"r1": {"uuid": "x", "other_config": {RESTORED_FROM: IDENT}}}, False, True, True),
    "same_uuid_preserve": ({"r1": {"uuid": VM, "other_config": {}}}, True, False, False),
    "same_uuid_new_identity": ({"r1": {"uuid": VM, "other_config": {}}}, False, False, True),
    "snapshot_does_not_count": ({"r1": {"uuid": "x", "is_a_snapshot": True, "other_config": {RESTORED_FROM: IDENT}}}, False, False, True),
}


@pytest.mark.parametrize("records,preserve,force,needed", list(REASONS.values()), ids=list(REASONS))
def test_import_reason(records, preserve, force, needed):
    reason, _existing = import_reason(records, IDENT, VM, preserve, force)
    assert (reason is not None) is needed


def test_resolve_backup_by_id_path_and_latest(tmp_path):
    directory = write_backup(tmp_path)
    backups = repo.list_backups(LocalStorage(), str(tmp_path))
    assert resolve_backup(params(tmp_path, vm_uuid=None, backup=IDENT), backups).id == IDENT
    assert resolve_backup(params(tmp_path, vm_uuid=None, backup=os.path.join(directory, "vm.xva.zst")), backups).id == IDENT
    assert resolve_backup(params(tmp_path), backups).id == IDENT
    with pytest.raises(RepositoryError):
        resolve_backup(params(tmp_path, vm_uuid=None, backup="/elsewhere/x"), backups)


def test_import_marks_and_tags_restored_vm(tmp_path):
    write_backup(tmp_path)
    xapi = xapi_with({})
    ctx = FakeCtx(params(tmp_path, name="web-restored"), xapi, FakeRunner())
    out = VmImport(ctx).run()
    assert out["changed"] is True and out["vm_uuid"] == NEW_VM and out["backup_id"] == IDENT
    assert ctx.runner.calls[0]["subcommand"] == "import" and ctx.runner.sessions == [SESSION]
    assert "--restore" not in ctx.runner.calls[0]["args"]
    calls = [(c["method"], c["args"][1:]) for c in xapi.calls]
    assert ("VM.set_is_a_template", [False]) in calls
    assert ("VM.set_name_label", ["web-restored"]) in calls
    assert ("VM.add_to_other_config", [RESTORED_FROM, IDENT]) in calls
    assert ("VM.add_tags", ["xapi-backup-restored"]) in calls and ("VM.add_tags", ["drill"]) in calls


def test_corrupt_backup_refused_before_any_byte_is_sent(tmp_path):
    directory = write_backup(tmp_path)
    stored = os.path.join(directory, "vm.xva.zst")
    with open(stored, "r+b") as handle:
        handle.write(b"X")  # same size, different bytes
    xapi = xapi_with({})
    ctx = FakeCtx(params(tmp_path), xapi, FakeRunner())
    with pytest.raises(RepositoryError, match="corrupt") as info:
        VmImport(ctx).run()
    assert info.value.code == "CHECKSUM_MISMATCH"
    assert ctx.runner.calls == [] and xapi.calls == []


def test_already_restored_is_not_changed(tmp_path):
    write_backup(tmp_path)
    xapi = xapi_with({"OpaqueRef:r": {"uuid": NEW_VM, "name_label": "web", "other_config": {RESTORED_FROM: IDENT}}})
    ctx = FakeCtx(params(tmp_path), xapi, FakeRunner())
    out = VmImport(ctx).run()
    assert out["changed"] is False and out["vm_uuid"] == NEW_VM and ctx.runner.calls == []


def test_check_mode_imports_nothing(tmp_path):
    write_backup(tmp_path)
    xapi = xapi_with({}, check_mode=True)
    ctx = FakeCtx(params(tmp_path), xapi, FakeRunner(), check_mode=True)
    out = VmImport(ctx).run()
    assert out["changed"] is True and out["vm_uuid"] is None
    assert all(c.get("planned") for c in ctx.runner.calls) and ctx.runner.sessions == []


def test_preserve_identity_passes_restore(tmp_path):
    write_backup(tmp_path)
    ctx = FakeCtx(params(tmp_path, preserve_identity=True), xapi_with({}), FakeRunner())
    VmImport(ctx).run()
    assert "--restore" in ctx.runner.calls[0]["args"]


def test_state_absent_destroys_restored_vm_and_disks(tmp_path):
    write_backup(tmp_path)
    vms = {"OpaqueRef:r": {"uuid": NEW_VM, "power_state": "Running", "VBDs": ["OpaqueRef:vbd"],
                           "other_config": {RESTORED_FROM: IDENT}},
           "OpaqueRef:other": {"uuid": "y", "name_label": "web", "other_config": {}}}
    xapi = xapi_with(vms)
    xapi.answers["VBD.get_record"] = lambda ref: {"type": "Disk", "empty": False, "VDI": "OpaqueRef:vdi"}
    out = VmImport(FakeCtx(params(tmp_path, state="absent"), xapi, FakeRunner())).run()
    assert out["changed"] is True and out["removed"] == [NEW_VM]
    assert [(c["method"], c["args"]) for c in xapi.calls if c["method"].endswith(("destroy", "shutdown"))] == [
        ("VM.hard_shutdown", ["OpaqueRef:r"]), ("VM.destroy", ["OpaqueRef:r"]), ("VDI.destroy", ["OpaqueRef:vdi"])]


def test_remove_vifs_destroys_every_vif(tmp_path):
    write_backup(tmp_path)
    xapi = xapi_with({})
    VmImport(FakeCtx(params(tmp_path, remove_vifs=True, start=True), xapi, FakeRunner())).run()
    methods = xapi.methods()
    assert methods.count("VIF.destroy") == 2 and methods.index("VIF.destroy") < methods.index("Async.VM.start")


def test_network_map_recreates_mapped_vif_only(tmp_path):
    write_backup(tmp_path, vifs=[{"device": "0", "network_uuid": "n-0", "network_name": "prod"},
                                 {"device": "1", "network_uuid": "n-1", "network_name": "backup"}])
    xapi = xapi_with({})
    VmImport(FakeCtx(params(tmp_path, network_map={"prod": "dr-net"}, preserve_identity=True), xapi, FakeRunner())).run()
    creates = [c["args"][0] for c in xapi.calls if c["method"] == "VIF.create"]
    assert [c["network"] for c in creates] == ["OpaqueRef:net-dr-net"]
    assert creates[0]["device"] == "0" and creates[0]["MAC"] == "aa:0" and creates[0]["MTU"] == "1500"
    assert [c["args"] for c in xapi.calls if c["method"] == "VIF.destroy"] == [["OpaqueRef:vif0"]]


def test_unknown_target_network_fails_before_import(tmp_path):
    write_backup(tmp_path)
    ctx = FakeCtx(params(tmp_path, network_map={"prod": "missing"}), xapi_with({}), FakeRunner())
    with pytest.raises(Exception, match="no network named"):
        VmImport(ctx).run()
    assert ctx.runner.calls == []


def test_restored_vm_and_disks_lose_the_snapshot_tags(tmp_path):
    write_backup(tmp_path)
    xapi = xapi_with({})
    tags = {"xapi_backup:owner": "xapi.backup", "xapi_backup:run": "r", "keep": "me"}
    xapi.answers["VM.get_record"] = lambda ref: {"uuid": NEW_VM, "name_label": "web", "power_state": "Halted",
                                                 "other_config": dict(tags), "VBDs": ["OpaqueRef:vbd"]}
    xapi.answers["VBD.get_record"] = lambda ref: {"type": "Disk", "empty": False, "VDI": "OpaqueRef:vdi"}
    xapi.answers["VDI.get_other_config"] = lambda ref: dict(tags)
    VmImport(FakeCtx(params(tmp_path), xapi, FakeRunner())).run()
    removed = [(c["method"], c["args"][1]) for c in xapi.calls if c["method"].endswith("remove_from_other_config")]
    assert ("VM.remove_from_other_config", "xapi_backup:owner") in removed
    assert ("VDI.remove_from_other_config", "xapi_backup:run") in removed
    assert ("VM.remove_from_other_config", "keep") not in removed


def test_latest_skips_a_newer_damaged_backup(tmp_path):
    write_backup(tmp_path)
    newer = write_backup(tmp_path, stamp="20261122T010000Z")
    with open(os.path.join(newer, "vm.xva.zst"), "r+b") as handle:
        handle.write(b"X")
    ctx = FakeCtx(params(tmp_path), xapi_with({}), FakeRunner())
    out = VmImport(ctx).run()
    assert out["backup_id"] == IDENT and "20261122T010000Z" in out["warnings"][0]
    args = ctx.runner.calls[0]["args"]
    assert args[args.index("--in") + 1].endswith(STAMP + "/vm.xva.zst")


def test_explicit_damaged_timestamp_is_refused_not_replaced(tmp_path):
    write_backup(tmp_path)
    newer = write_backup(tmp_path, stamp="20261122T010000Z")
    with open(os.path.join(newer, "vm.xva.zst"), "r+b") as handle:
        handle.write(b"X")
    ctx = FakeCtx(params(tmp_path, timestamp="20261122T010000Z"), xapi_with({}), FakeRunner())
    with pytest.raises(RepositoryError, match="corrupt"):
        VmImport(ctx).run()
    assert ctx.runner.calls == []


OTHER_VM = "eeeeeeee-0000-0000-0000-000000000005"


def forge_in_place(directory):
    """An attacker with write access to the share: new data, size and digest recomputed, manifest rewritten."""
    payload = b"attacker's xva"
    path = os.path.join(directory, repo.MANIFEST_NAME)
    manifest = json.load(open(path))
    stored = os.path.join(directory, manifest["stored_file"])
    os.chmod(stored, 0o600)
    with open(stored, "wb") as handle:
        handle.write(payload)
    manifest["files"][manifest["stored_file"]] = {"size": len(payload), "digest": repo.digest_of(payload)}
    manifest["stored_size"] = len(payload)
    os.chmod(path, 0o600)
    with open(path, "w") as handle:
        json.dump(manifest, handle)


def edit_manifest(directory):
    path = os.path.join(directory, repo.MANIFEST_NAME)
    manifest = json.load(open(path))
    manifest["vm"]["name_label"] = "renamed"
    os.chmod(path, 0o600)
    with open(path, "w") as handle:
        json.dump(manifest, handle)


@pytest.mark.parametrize("attack", ["forged_data", "edited_manifest", "moved_from_other_vm", "unsigned"])
def test_with_a_key_a_forged_or_moved_backup_is_never_restored(tmp_path, attack):
    """Key set: a forged XVA with recomputed digest, an edited manifest, a backup of another VM moved into this
    VM's directory, an unsigned backup -- each refused before any byte reaches xapi; the good one stays usable."""
    good = write_backup(tmp_path, key="k", stamp="20261120T010000Z")
    if attack == "moved_from_other_vm":
        source = write_backup(tmp_path, key="k", owner=OTHER_VM, stamp="20261121T010000Z")
        target = os.path.join(str(tmp_path), POOL, VM, "20261121T010000Z")
        shutil.copytree(source, target)
    else:
        target = write_backup(tmp_path, key=None if attack == "unsigned" else "k", stamp="20261121T010000Z")
        {"forged_data": forge_in_place, "edited_manifest": edit_manifest, "unsigned": lambda d: None}[attack](target)
    ident = "%s/%s/20261121T010000Z" % (POOL, VM)
    xapi = xapi_with({})
    ctx = FakeCtx(params(tmp_path, vm_uuid=None, backup=ident, repository_key="k"), xapi, FakeRunner())
    with pytest.raises(RepositoryError) as info:
        VmImport(ctx).run()
    assert info.value.code == "UNTRUSTED_BACKUP" and "\n" not in info.value.message
    assert ctx.runner.calls == [] and xapi.calls == []
    latest = FakeCtx(params(tmp_path, repository_key="k"), xapi_with({}), FakeRunner())
    out = VmImport(latest).run()
    assert out["backup_id"] == good[len(str(tmp_path)) + 1:] and "warnings" not in out


def test_xva_describing_another_vm_is_refused_before_import(tmp_path):
    """Without a key an attacker can rewrite a manifest; the XVA's own ova.xml must still name the VM."""
    write_backup(tmp_path)
    xapi = xapi_with({})
    storage = FakeStorage(ova_vm=OTHER_VM)
    ctx = FakeCtx(params(tmp_path, backup=IDENT, vm_uuid=None), xapi, FakeRunner(), storage=storage)
    with pytest.raises(RepositoryError) as info:
        VmImport(ctx).run()
    assert info.value.code == "VM_MISMATCH" and OTHER_VM in info.value.message
    assert ctx.runner.calls == [] and xapi.calls == []


def test_without_a_key_the_restore_warns(tmp_path):
    write_backup(tmp_path)
    out = VmImport(FakeCtx(params(tmp_path), xapi_with({}), FakeRunner())).run()
    assert any("no repository key" in w for w in out["warnings"])


PRODUCTION = "eeeeeeee-0000-0000-0000-000000000005"


def two_restores_of_one_backup():
    """A production VM restored earlier from IDENT, and the health check's scratch VM from the same backup."""
    return {"OpaqueRef:prod": {"uuid": PRODUCTION, "power_state": "Running", "VBDs": [], "other_config": {RESTORED_FROM: IDENT}},
            "OpaqueRef:scratch": {"uuid": NEW_VM, "power_state": "Running", "VBDs": [], "other_config": {RESTORED_FROM: IDENT}}}


def test_absent_with_restored_vm_uuid_destroys_only_that_vm(tmp_path):
    write_backup(tmp_path)
    xapi = xapi_with(two_restores_of_one_backup())
    out = VmImport(FakeCtx(params(tmp_path, state="absent", restored_vm_uuid=NEW_VM.upper()), xapi, FakeRunner())).run()
    assert out["removed"] == [NEW_VM]
    touched = [c["args"][0] for c in xapi.calls if c["method"] in ("VM.hard_shutdown", "VM.destroy")]
    assert touched == ["OpaqueRef:scratch", "OpaqueRef:scratch"]


@pytest.mark.parametrize("uuid", [PRODUCTION.replace("e", "f"), "not-a-uuid"])
def test_absent_with_a_foreign_or_bad_uuid_destroys_nothing(tmp_path, uuid):
    write_backup(tmp_path)
    vms = two_restores_of_one_backup()
    vms["OpaqueRef:foreign"] = {"uuid": PRODUCTION.replace("e", "f"), "other_config": {}}  # not restored from IDENT
    xapi = xapi_with(vms)
    ctx = FakeCtx(params(tmp_path, state="absent", restored_vm_uuid=uuid), xapi, FakeRunner())
    if uuid == "not-a-uuid":
        with pytest.raises(XapiUsageError, match="restored_vm_uuid"):
            VmImport(ctx).run()
    else:
        assert VmImport(ctx).run()["removed"] == []
    assert not [c for c in xapi.calls if c["method"].endswith(("destroy", "shutdown"))]


def test_failure_after_the_vm_exists_names_it_in_the_partial_result(tmp_path):
    write_backup(tmp_path)
    xapi = xapi_with({})
    xapi.answers["VM.get_uuid"] = lambda ref: NEW_VM

    def boot_fails(method, *args, **kwargs):
        raise XapiError("VM_BOOT_FAILED", ["no bootable disk"], "VM.start")

    xapi.async_call = boot_fails
    ctx = FakeCtx(params(tmp_path, start=True), xapi, FakeRunner())
    with pytest.raises(XapiError) as info:
        VmImport(ctx).run()
    assert info.value.partial == {"vm_uuid": NEW_VM, "backup_id": IDENT}


# ------------------------------------------------------------ own metadata: the dump of the backup's own run

OWN_REF = "OpaqueRef:eeeeeeee-0000-0000-0000-000000000005"
METADATA = "vm-%s.metadata.xva" % VM


def write_running_backup(root, run_id, stamp=STAMP):
    """A backup of a VM that ran at backup time (exported from its snapshot)."""
    directory = write_backup(root, stamp=stamp)
    path = os.path.join(directory, repo.MANIFEST_NAME)
    with open(path) as handle:
        manifest = json.load(handle)
    manifest.update(run_id=run_id, snapshot={"uuid": "cccccccc-0000-0000-0000-000000000003"})
    os.chmod(path, 0o644)
    with open(path, "w") as handle:
        json.dump(repo.seal_manifest(manifest, None), handle)
    return directory


def write_dump(root, run_id, stamp, metadata=b"own-metadata"):
    """A pool dump made by pool_dump in run ``run_id``: the database and the VM's metadata, manifest last."""
    when = repo.parse_timestamp(stamp)
    storage = LocalStorage()
    created = storage.make_backup_dir(str(root), POOL, repo.POOL_DIR, stamp)
    directory = os.path.join(str(root), created["id"])
    files = {}
    for name, data in ((repo.POOL_DB_NAME, b"<database/>"), (METADATA, metadata)):
        with open(os.path.join(directory, name), "wb") as handle:
            handle.write(data)
        files[name] = {"size": len(data), "digest": "sha256:" + hashlib.sha256(data).hexdigest()}
    manifest = repo.build_manifest(
        repo.MANIFEST_KIND_POOL_DB, tool_version="0.1.0", pool={"uuid": POOL, "name": "p"}, xapi_version="25",
        run_id=run_id, files=files, stored_file=repo.POOL_DB_NAME, started=when,
        ended=when + datetime.timedelta(seconds=1), ident=created["id"], sequence=created["sequence"])
    storage.write_json(str(root), os.path.join(directory, repo.MANIFEST_NAME), repo.seal_manifest(manifest, None),
                       exclusive=True)
    return directory


class PushRunner(FakeRunner):
    """``push`` as the helper does it (roles/helper/files/xapi-backup-helper cmd_push): read the file ONCE,
    refuse it unless THOSE bytes have ``--sha256``, then send them. ``before_read`` may swap the file."""

    def __init__(self, before_read=None):
        super().__init__()
        self.before_read = before_read
        self.sent = []

    def run(self, subcommand, args=None, stdin=None, session=None, check=True):
        if subcommand != "push":
            return super().run(subcommand, args, stdin, session, check)
        self.calls.append({"subcommand": subcommand, "args": list(args), "planned": False, "side_effect": True})
        path = args[args.index("--in") + 1]
        if self.before_read:
            self.before_read(path)
        with open(path, "rb") as handle:
            body = handle.read()
        if "--sha256" in args and hashlib.sha256(body).hexdigest() != args[args.index("--sha256") + 1]:
            raise _HelperError("%s does not match the manifest's sha256" % path, "CHECKSUM_MISMATCH")
        self.sent.append((path, body))
        return {"ok": True, "size": len(body), "task": {"status": "success", "result": "<value>%s</value>" % OWN_REF}}


def identity_xapi():
    xapi = xapi_with({})
    xapi.answers["VM.get_uuid"] = lambda ref: VM if ref == OWN_REF else NEW_VM
    return xapi


def test_own_metadata_comes_from_the_backups_own_run_not_a_newer_dump(tmp_path):
    """Review finding: the NEWEST pool dump was used; a later run's dump describes the VM as it was later."""
    write_running_backup(tmp_path, "run-1", stamp="20261121T235901Z")
    own = write_dump(tmp_path, "run-1", "20261121T235950Z", metadata=b"config at run 1")
    newer = write_dump(tmp_path, "run-2", "20261201T000000Z", metadata=b"config at run 2")   # newer sequence and time
    runner = PushRunner()
    ctx = FakeCtx(params(tmp_path, preserve_identity=True), identity_xapi(), runner)
    out = VmImport(ctx).run()
    assert runner.sent == [(os.path.join(own, METADATA), b"config at run 1")]
    assert out["own_metadata"] == {"dump": os.path.relpath(own, str(tmp_path)), "reason": None}
    push = [c for c in runner.calls if c["subcommand"] == "push"][0]["args"]
    assert push[push.index("--sha256") + 1] == hashlib.sha256(b"config at run 1").hexdigest()
    assert "restore=true" in push and "/import_metadata" in push
    assert "VM.destroy" in ctx._xapi.methods()                 # the snapshot-born record went
    assert os.path.isdir(newer)                                 # out of band: the other run's dump untouched


def test_no_dump_in_the_backups_run_keeps_the_snapshot_uuid_with_a_reason(tmp_path):
    write_running_backup(tmp_path, "run-1")
    write_dump(tmp_path, "run-2", "20261201T000000Z")            # only another run's dump
    runner = PushRunner()
    ctx = FakeCtx(params(tmp_path, preserve_identity=True), identity_xapi(), runner)
    out = VmImport(ctx).run()
    assert runner.sent == [] and "VM.destroy" not in ctx._xapi.methods()
    assert out["own_metadata"]["dump"] is None
    assert out["own_metadata"]["reason"] == "run run-1 of backup %s has no complete pool dump" % IDENT
    assert "\n" not in out["own_metadata"]["reason"]
    assert any("kept its snapshot's uuid" in w and "run-1" in w for w in out["warnings"])


def test_metadata_swapped_after_listing_is_refused_by_the_push(tmp_path):
    """Time of check / time of use: the bytes the helper sends are the bytes it verified."""
    write_running_backup(tmp_path, "run-1")
    own = write_dump(tmp_path, "run-1", "20261121T235950Z", metadata=b"genuine")
    hashed = []
    storage = FakeStorage()
    real_hash = storage.hash_file
    storage.hash_file = lambda root, rel, algo: hashed.append(rel) or real_hash(root, rel, algo)

    def swap(path):
        os.chmod(path, 0o644)
        with open(path, "wb") as handle:
            handle.write(b"planted")

    runner = PushRunner(before_read=swap)
    ctx = FakeCtx(params(tmp_path, preserve_identity=True), identity_xapi(), runner, storage=storage)
    out = VmImport(ctx).run()
    assert runner.sent == []                                    # nothing reached xapi
    assert "VM.destroy" not in ctx._xapi.methods()              # the imported VM (snapshot uuid) is kept
    assert "CHECKSUM" in out["own_metadata"]["reason"] or "sha256" in out["own_metadata"]["reason"]
    assert not [rel for rel in hashed if rel.endswith(METADATA)]  # no separate controller-side check to race
    assert os.path.join(own, METADATA).startswith(str(tmp_path))


def test_delta_restore_sends_its_metadata_through_the_checked_push(tmp_path):
    """The delta restore's metadata.xva: the same push (sha256 checked on the bytes sent), swapped bytes refused."""
    from ansible_collections.xapi.backup.plugins.module_utils import _delta
    from ansible_collections.xapi.backup.plugins.plugin_utils._vm_delta_import import VmDeltaImport

    point = tmp_path / POOL / VM / STAMP
    point.mkdir(parents=True)
    (point / _delta.METADATA_FILE).write_bytes(b"the VM's configuration")
    top = {"id": IDENT, "files": {_delta.METADATA_FILE: {
        "size": 22, "digest": "sha256:" + hashlib.sha256(b"the VM's configuration").hexdigest()}}}
    sr = {"uuid": "ssssssss-0000-0000-0000-000000000009"}

    runner = PushRunner()
    importer = VmImport(FakeCtx(params(tmp_path, preserve_identity=True), identity_xapi(), runner))
    meta = VmDeltaImport(importer)._import_metadata(importer.ctx._xapi, top, {"src-vdi": "dst-vdi"}, sr)
    assert meta["vm_refs"] == [OWN_REF] and runner.sent == [(str(point / _delta.METADATA_FILE), b"the VM's configuration")]
    push = runner.calls[-1]["args"]
    assert "restore=true" in push and "sr_uuid=%s" % sr["uuid"] in push and "vdi:src-vdi=dst-vdi" in push

    def swap(path):
        with open(path, "wb") as handle:
            handle.write(b"planted configuration")
    swapped = PushRunner(before_read=swap)
    importer = VmImport(FakeCtx(params(tmp_path, preserve_identity=True), identity_xapi(), swapped))
    with pytest.raises(_HelperError) as caught:
        VmDeltaImport(importer)._import_metadata(importer.ctx._xapi, top, {}, sr)
    assert caught.value.code == "CHECKSUM_MISMATCH" and swapped.sent == []

    no_sha = dict(top, files={_delta.METADATA_FILE: {"size": 22, "digest": "blake2b:" + "0" * 64}})
    with pytest.raises(RepositoryError) as refused:
        VmDeltaImport(importer)._import_metadata(importer.ctx._xapi, no_sha, {}, sr)
    assert refused.value.code == "BAD_DIGEST"
