# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The three DR runbooks as the job templates of docs/awx.md, run through ansible-runner the way AWX
runs them (tests/awx/awxjob.py: credential FILE injector, survey answers as !unsafe extra vars, the
collection installed from the tarball), on the simulated pools of tests/integration/test_dr_*.py.

Pool A (tiny) is backed up by the doc's *Backup* job template (VM backups and the pool dump), then
lost; each runbook runs against a fresh "dr-target" pool with a password of its own, the target's
credential only. Out of band: the simulator's tables (a dry run changes nothing) and XenAPI
sessions of the test's own. Every job is scanned for the target's password and session ids in
everything the runner wrote (assert_no_secret)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.awx import awxjob
from tests.awx.test_awx_jobs import edited_doc, launch
from tests.integration.test_dr_pool_db import FAST, _tables
from tests.integration.test_playbooks import xapi_session

pytestmark = pytest.mark.slow

IMPORT_TASK = "Import the VMs N at a time and start each tier as soon as its VMs are imported"
DB_TASK = "Restore the pool database (dry run first; for real only with xapi_backup_dr_confirm=true)"
METADATA_TASK = "Bring the VMs back from their metadata (xapi's dry run first for each)"


def _pool(sim, workdir: Path, repo: Path, collections: Path, name: str) -> dict:
    helper = collections / "ansible_collections/xapi/backup/roles/helper/files/xapi-backup-helper"
    return awxjob.pool_target(sim, workdir, repo, collections, name,
                              xapi_backup_helper_path=str(helper),  # the helper of the installed tarball
                              # inventory settings of the runbooks, short for the simulator
                              xapi_backup_dr_wait_interval=0.2, xapi_backup_dr_wait_timeout=60,
                              xapi_backup_dr_guest_timeout=30, xapi_backup_dr_guest_poll_interval=0.2)


def _vms(sim) -> dict:
    """{name: (uuid, sorted MACs, power state)} of the guest VMs of a simulated pool."""
    session = xapi_session(sim.info["url"], sim.info["password"])
    try:
        x = session.xenapi
        return {rec["name_label"]: (rec["uuid"], sorted(x.VIF.get_MAC(v) for v in rec["VIFs"]), rec["power_state"])
                for rec in x.VM.get_all_records().values()
                if not (rec["is_a_template"] or rec["is_a_snapshot"] or rec["is_control_domain"])}
    finally:
        session.xenapi.session.logout()


def _task_results(job: awxjob.Job, task: str) -> list:
    """The results (res) of the runner_on_ok/failed events of one task."""
    return [e["event_data"]["res"] for e in job.events
            if e.get("event") in ("runner_on_ok", "runner_on_failed") and e.get("event_data", {}).get("task") == task]


@pytest.fixture(scope="module")
def doc():
    return awxjob.parse_doc()


@pytest.fixture(scope="module")
def lost_pool(tmp_path_factory, installed_collections, doc):
    """Pool A backed up by the Backup job template (VMs and pool dump), its VMs noted, then lost
    (its SR directories survive, as in tests/integration/test_dr_metadata.py)."""
    workdir = tmp_path_factory.mktemp("awx-dr")
    repo = workdir / "repository"
    sim_a = awxjob.start_pool(workdir, "tiny", "pool-a")
    try:
        pool_a = _pool(sim_a, workdir, repo, installed_collections, "pool-a")
        job = launch(doc, pool_a, "Backup", {"survey_run_id": "dr"})
        assert job.status == "successful", job.stdout[-3000:]
        vms = _vms(sim_a)
    finally:
        sim_a.stop()
    return {"workdir": workdir, "repo": repo, "collections": installed_collections, "vms": vms,
            "source": sim_a.info["pool_uuid"]}


@pytest.fixture()
def target(lost_pool, request):
    """A freshly installed host (pools/dr-target.yml) to recover onto; stopped after the test."""
    started = []

    def start(name, **options):
        sim = awxjob.start_pool(lost_pool["workdir"], "dr-target", name, **options)
        started.append(sim)
        return _pool(sim, lost_pool["workdir"], lost_pool["repo"], lost_pool["collections"], name)

    yield start
    for sim in started:
        sim.stop()


def run(doc, pool, title, answers, name):
    return launch(doc, pool, title, answers, name=name)


# ---------------------------------------------------------------- DR 1: pool database restore


def rehearse_db_dry_run(doc, lost_pool, pool, name):
    """DR 1 dry run: xapi accepts the dump, names the member hosts a restore forgets, changes nothing."""
    before = _tables(pool["sim"])
    job = run(doc, pool, "DR 1: restore the pool database", {"survey_dr_source_pool": lost_pool["source"]}, name)
    assert job.status == "successful" and job.rc == 0, job.stdout[-3000:]
    (res,) = _task_results(job, DB_TASK)
    assert res["changed"] is False and res["dry_run"]["ok"] is True
    messages = job.messages()
    host = next(iter(pool["inventory"]["all"]["children"]["xapi_pools"]["hosts"]))
    assert any(m.startswith("DR runbook 1 on %s: dry run passed" % host) for m in messages), messages
    assert any(m.startswith("dry run: ") and "xapi accepted the dump" in m for m in messages), messages
    assert "member hosts a restore forgets: tiny-member" in messages
    assert _tables(pool["sim"]) == before
    return job


def test_dr1_dry_run_then_restore_needs_the_confirmation_answer(doc, lost_pool, target):
    pool = target("b-db", options=FAST)
    rehearse_db_dry_run(doc, lost_pool, pool, "dr1-dry")
    before = _tables(pool["sim"])
    job = run(doc, pool, "DR 1: restore the pool database",
              {"survey_dr_source_pool": lost_pool["source"], "survey_dr_db_mode": "restore"}, "dr1-noconfirm")
    assert job.status == "successful", job.stdout[-3000:]
    assert any("needs confirm=true" in m for m in job.messages()), job.messages()
    (res,) = _task_results(job, DB_TASK)
    assert res["changed"] is False and res["would_restore"] is True
    assert _tables(pool["sim"]) == before

    job = run(doc, pool, "DR 1: restore the pool database",
              {"survey_dr_source_pool": lost_pool["source"], "survey_dr_db_mode": "restore", "survey_dr_confirm": "yes"},
              "dr1-restore")
    assert job.status == "successful", job.stdout[-3000:]
    assert any(m.startswith("restored pool: tiny pool (%s), master tiny-master" % lost_pool["source"])
               for m in job.messages()), job.messages()
    assert {n: v[:2] for n, v in _vms(pool["sim"]).items()} == {n: v[:2] for n, v in lost_pool["vms"].items()}


def test_renaming_a_dr_survey_variable_in_the_doc_breaks_the_rehearsal(tmp_path, doc, lost_pool, target):
    edited = edited_doc(tmp_path, '{"variable": "survey_dr_source_pool"', '{"variable": "survey_dr_pool"')  # DR 1's
    with pytest.raises(AssertionError, match="survey question 'survey_dr_pool' is required"):
        rehearse_db_dry_run(edited, lost_pool, target("b-db-drift", options=FAST), "dr1-drift")


# ---------------------------------------------------------------- DR 2: metadata recovery


def test_dr2_dry_run_changes_nothing_then_every_vm_comes_back_on_its_own_disks(doc, lost_pool, target):
    pool = target("b-md")
    before = _tables(pool["sim"])
    dry = run(doc, pool, "DR 2: metadata recovery", {"survey_dr_source_pool": lost_pool["source"]}, "dr2-dry")
    assert dry.status == "successful", dry.stdout[-3000:]
    messages = dry.messages()
    assert "SRs: 0 SR(s) attached, 2 to attach, 0 already attached, 0 failed" in messages, messages
    assert any(m.startswith("  SR nfs: would attach") for m in messages), messages
    assert _tables(pool["sim"]) == before

    job = run(doc, pool, "DR 2: metadata recovery",
              {"survey_dr_source_pool": lost_pool["source"], "survey_dr_md_mode": "recover"}, "dr2-recover")
    assert job.status == "successful" and job.rc == 0, job.stdout[-3000:]
    (res,) = _task_results(job, METADATA_TASK)
    assert {v["name"]: v["status"] for v in res["vms"]} == {n: "imported" for n in lost_pool["vms"]}  # per VM, in the event
    messages = job.messages()
    assert any("3 imported, 0 would import, 0 already present, 0 failed" in m for m in messages), messages
    assert any("start: 3 VM(s) in 1 tier(s): 3 ready, 0 running, 0 failed" in m for m in messages), messages
    got = _vms(pool["sim"])
    assert {n: v[:2] for n, v in got.items()} == {n: v[:2] for n, v in lost_pool["vms"].items()}   # same uuids and MACs
    assert {v[2] for v in got.values()} == {"Running"}


# ---------------------------------------------------------------- DR 3: rebuild from backups


def test_dr3_dry_run_plans_then_rebuild_imports_every_vm_in_slots(doc, lost_pool, target):
    pool = target("b-rb")
    before = _tables(pool["sim"])
    answers = {"survey_dr_source_pool": lost_pool["source"], "survey_dr_concurrency": 2}
    dry = run(doc, pool, "DR 3: rebuild the pool from backups", answers, "dr3-dry")
    assert dry.status == "successful", dry.stdout[-3000:]
    messages = dry.messages()
    assert any("3 VM(s), 2 import slot(s) in parallel" in m for m in messages), messages
    assert any("nothing was changed" in m for m in messages), messages
    assert _task_results(dry, IMPORT_TASK) == []
    assert _tables(pool["sim"]) == before

    job = run(doc, pool, "DR 3: rebuild the pool from backups", dict(answers, survey_dr_rebuild_mode="rebuild"), "dr3-rebuild")
    assert job.status == "successful" and job.rc == 0, job.stdout[-3000:]
    (res,) = _task_results(job, IMPORT_TASK)                       # per VM, in the event: imported, started
    assert sorted(v["name"] for v in res["vms"]) == sorted(lost_pool["vms"])
    assert {v["status"] for v in res["vms"]} == {"ready"} and not any(v.get("import_failed") for v in res["vms"])
    assert any("3 VM(s) back, 0 failed to import, 0 failed to start or report" in m for m in job.messages()), job.messages()
    got = _vms(pool["sim"])
    assert {n: v[1] for n, v in got.items()} == {n: v[1] for n, v in lost_pool["vms"].items()}     # MACs kept
    # uuids kept, a VM running at backup time included (its own metadata re-imported over its disks)
    assert {n: v[0] for n, v in got.items()} == {n: v[0] for n, v in lost_pool["vms"].items()}
    assert {v[2] for v in got.values()} == {"Running"}


def test_dr3_reads_the_mapping_file_of_the_project_by_its_survey_path(doc, lost_pool, target):
    """docs/awx.md: generate the mapping with the Restore template, commit an edited copy to the
    project, give its project path to DR 3's survey. The edit names an SR the target lacks: the
    dry run fails naming it (so the file was read) and changes nothing."""
    pool = target("b-map")
    gen = run(doc, pool, "Restore", {"survey_action": "generate", "survey_source_pool": lost_pool["source"]}, "dr3-generate")
    assert gen.status == "successful", gen.stdout[-3000:]
    mapping = json.loads(json.dumps(gen.artifacts["xapi_backup_restore_mapping"]))
    assert mapping["srs"]
    for sr in mapping["srs"]:
        sr["target"] = "no-such-sr"
    project = lost_pool["workdir"] / "project-dr3"
    shutil.copytree(awxjob.PROJECT, project)
    (project / "restore" / "dr.yml").write_text(yaml.safe_dump(mapping))
    before = _tables(pool["sim"])
    job = launch(doc, pool, "DR 3: rebuild the pool from backups",
                 {"survey_dr_source_pool": lost_pool["source"], "survey_dr_mapping_file": "restore/dr.yml"},
                 name="dr3-mapping", project=project)
    assert job.status == "failed", job.stdout[-3000:]
    assert any("no-such-sr" in m for m in job.messages()), job.messages()
    assert _task_results(job, IMPORT_TASK) == []
    assert _tables(pool["sim"]) == before
