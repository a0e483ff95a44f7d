# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""AWX rehearsal (issue 17): every job template of docs/awx.md through ansible-runner, in AWX's
order, against the tiny simulated pool, with the collection installed from the tarball built from
this checkout and the project of examples/awx-project.

The "pool master" is this machine (connection local, as tests/integration/test_playbooks.py); XAPI
is the simulator's HTTPS URL, its CA given through the credential type's file injector. The tests
share one simulator and one repository and run in file order (install helper, backup, failure,
restore workflow, verify); each job is checked on its event stream and for secrets in everything
the runner wrote.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.awx import awxjob

pytestmark = pytest.mark.slow

BACKUP_TASK = "Back up VMs into the repository"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def doc():
    return awxjob.parse_doc()


@pytest.fixture(scope="module")
def pool(tmp_path_factory, installed_collections):
    workdir = tmp_path_factory.mktemp("awx")
    sim = awxjob.start_pool(workdir, "tiny", "sim-state")
    try:
        target = awxjob.pool_target(
            sim, workdir, workdir / "repository", installed_collections, "tiny",
            xapi_backup_helper_dest=str(workdir / "opt" / "bin" / "xapi-backup-helper"),
            xapi_backup_retries=0)  # a failed-VM test cuts one export: transient, else retried (issue 14)
        target["session"] = sim.session()
        yield target
    finally:
        sim.stop()


def launch(doc, pool, title, answers=None, **kw) -> awxjob.Job:
    kw.setdefault("credential", pool["credential"])
    kw.setdefault("name", None)
    job = awxjob.run_job(doc, title, workdir=pool["workdir"], inventory=pool["inventory"], answers=answers,
                         collections_path=pool["collections"], sim=pool["sim"], **kw)
    assert_no_secret(job, pool["password"], pool["repo"])
    return job


def run_reports(repo: Path) -> list:
    """The run reports (JSON, Markdown, HTML) and run records the jobs wrote into the repository."""
    return [p for p in repo.rglob("*") if p.is_file() and "runs" in p.relative_to(repo).parts] if repo.exists() else []


def assert_no_secret(job: awxjob.Job, password: str, repo: Path):
    """No XAPI password and no session id of the run in any event, any file the runner wrote or any
    run report."""
    secrets = [password] + sorted(job.sessions)
    events = json.dumps(job.events)
    leaks = [s for s in secrets if s in events or s in job.stdout]
    assert leaks == [], "secret in the job events"
    written = job.written_files()
    # the scan saw the runner's output: its event files and artifacts/<id>/command (the job's environment)
    assert any(p.parent.name == "job_events" for p in written)
    assert any(p.name == "command" and p.parent.parent.name == "artifacts" for p in written)
    for path in written + run_reports(repo):
        data = path.read_bytes()
        assert not [s for s in secrets if s.encode() in data], "secret in %s" % path
    assert password not in (job.private_data_dir / "env" / "extravars").read_text()   # a file injector only


def vm_names(pool) -> list:
    return sorted(rec["name_label"] for rec in pool["session"].xenapi.VM.get_all_records().values()
                  if not rec["is_a_template"] and not rec["is_a_snapshot"] and not rec["is_control_domain"]
                  and "xapi_backup:restored_from" not in rec["other_config"])


def restored(pool) -> list:
    return sorted(rec["name_label"] for rec in pool["session"].xenapi.VM.get_all_records().values()
                  if rec["other_config"].get("xapi_backup:restored_from"))


def report(pool, run_id) -> dict:
    return json.loads((pool["repo"] / pool["pool_uuid"] / "runs" / run_id / "report.json").read_text())


# ---------------------------------------------------------------- rehearsal steps (reused on edited copies of the doc)


def rehearse_generate_for_one_vm(doc, pool, name=None):
    """Restore template, step generate, survey "VMs" = tiny-halted: the mapping covers that VM only."""
    job = launch(doc, pool, "Restore", {"survey_action": "generate", "survey_vms": "tiny-halted"}, name=name)
    assert job.status == "successful", job.stdout[-3000:]
    assert any("1 VM(s) of pool" in m for m in job.messages()), job.messages()
    return job


# ---------------------------------------------------------------- the job templates, in order


def test_the_doc_lists_every_job_template_of_the_project(doc):
    playbooks = {t: v["playbook"] for t, v in doc["templates"].items()}
    assert playbooks == {"Install helper": "install_helper.yml", "Backup": "backup.yml",
                         "Restore": "restore.yml", "Verify (health check)": "verify.yml",
                         "DR 1: restore the pool database": "dr_pool_db_restore.yml",
                         "DR 2: metadata recovery": "dr_metadata_recovery.yml",
                         "DR 3: rebuild the pool from backups": "dr_pool_rebuild.yml"}
    for playbook in playbooks.values():
        plays = yaml.safe_load((awxjob.PROJECT / playbook).read_text())
        assert plays == [{"name": plays[0]["name"], "ansible.builtin.import_playbook": "xapi.backup." + playbook[:-4]}]
    injectors = doc["credential_type"]["injectors"]
    # the password is a file of the job (its path in the environment), never a variable's value
    assert injectors["env"]["XAPI_PASSWORD_FILE"] == "{{ tower.filename.password }}"
    assert injectors["file"]["template.password"] == "{{ password }}"
    assert "{{ password }}" not in json.dumps([injectors["env"], injectors.get("extra_vars", {})])


def test_install_helper(doc, pool):
    job = launch(doc, pool, "Install helper", credential=None)      # Machine credential only
    assert job.status == "successful", job.stdout[-3000:]
    helper = Path(pool["inventory"]["all"]["children"]["xapi_pools"]["hosts"]["tiny"]["xapi_backup_helper_dest"])
    assert helper.is_file()
    assert helper.read_bytes() == (pool["collections"] / "ansible_collections/xapi/backup/roles/helper/files/xapi-backup-helper").read_bytes()


def test_backup_every_vm_publishes_the_summary_and_per_vm_events(doc, pool):
    job = launch(doc, pool, "Backup", {"survey_run_id": "awx-1"})
    assert job.status == "successful", job.stdout[-3000:]
    names = vm_names(pool)
    assert job.item_results(BACKUP_TASK) == {n: "runner_item_on_ok" for n in names}
    summary = job.artifacts["xapi_backup_runs"]["tiny"]               # set_stats -> the job's artifacts
    assert summary["selected"] == len(names) == summary["backed_up"] and summary["failed"] == 0
    rep = report(pool, "awx-1")
    assert rep["summary"]["line"] == summary["line"]
    # the artifact says where the report is (a path on the pool master: here, this machine)
    assert summary["report"] == str(pool["repo"] / pool["pool_uuid"] / "runs" / "awx-1" / "report.md")
    assert summary["line"] in Path(summary["report"]).read_text()
    assert summary["line"] in job.messages()                         # the summary is in the job output
    assert sorted(v["name"] for v in rep["vms"] if v["status"] == "backed up") == names


def test_a_failed_vm_fails_the_job_with_its_name(doc, pool):
    pool["sim"].faults.set(cut_after_bytes=300000, path="/export", count=1)
    try:
        # the survey picks two VMs; a run id of digits arrives as a number (AWX's !unsafe answer)
        job = launch(doc, pool, "Backup", {"survey_run_id": "20261203", "survey_concurrency": 1,
                                           "survey_vm_names": " tiny-running, tiny-halted"})
    finally:
        pool["sim"].faults.clear()
    assert job.status == "failed"
    items = job.item_results(BACKUP_TASK)
    failed = [n for n, e in items.items() if e == "runner_item_on_failed"]
    assert len(failed) == 1 and len(items) == 2, items            # the other VM went on
    assert sorted(items) == ["tiny-halted", "tiny-running"]
    assert job.artifacts["xapi_backup_runs"]["tiny"]["failed"] == 1
    assert report(pool, "20261203")["summary"]["line"] == job.artifacts["xapi_backup_runs"]["tiny"]["line"]
    assert any("failed for VM %s" % failed[0] in m for m in job.messages()), job.messages()[-5:]


def test_restore_without_vms_is_refused_unless_every_vm_is_asked_for(doc, pool):
    job = launch(doc, pool, "Restore", {"survey_action": "restore"})
    assert job.status == "failed"
    assert any("xapi_backup_restore_all=true" in m for m in job.messages())
    assert restored(pool) == []


def test_restore_workflow_generate_validate_restore_remove(doc, pool):
    """docs/awx.md's workflow: generate publishes the mapping, the next nodes get it as an artifact;
    an edited copy committed to the project is found by its path in the project."""
    gen = launch(doc, pool, "Restore", {"survey_action": "generate"})
    assert gen.status == "successful", gen.stdout[-3000:]
    mapping = gen.artifacts["xapi_backup_restore_mapping"]
    assert {s["source_name"] for s in mapping["srs"]} == {"nfs", "small-lvm"}

    # workflow node 2: validate with the artifact of node 1
    val = launch(doc, pool, "Restore", {"survey_action": "validate"}, artifacts=gen.artifacts)
    assert val.status == "successful", val.stdout[-3000:]
    assert any(m.startswith("mapping OK for pool") and "3 VM(s)" in m for m in val.messages()), val.messages()

    # the edit: small-lvm (12 MiB) cannot hold a second copy of tiny-on-lvm, so its disks go to nfs
    edited = json.loads(json.dumps(mapping))
    for sr in edited["srs"]:
        if sr["source_name"] == "small-lvm":
            sr["target"] = "nfs"
    project = pool["workdir"] / "project-edited"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(awxjob.PROJECT, project)
    (project / "restore" / "tiny.yml").write_text(yaml.safe_dump(edited))
    answers = {"survey_mapping_file": "restore/tiny.yml", "survey_all": "yes"}

    broken = json.loads(json.dumps(edited))
    broken["srs"][0]["target"] = "no-such-sr"
    (project / "restore" / "broken.yml").write_text(yaml.safe_dump(broken))
    bad = launch(doc, pool, "Restore", dict(answers, survey_action="validate", survey_mapping_file="restore/broken.yml"),
                 project=project)
    assert bad.status == "failed" and any("no-such-sr" in m for m in bad.messages()), bad.stdout[-3000:]

    res = launch(doc, pool, "Restore", dict(answers, survey_action="restore"), project=project)
    assert res.status == "successful", res.stdout[-3000:]
    assert restored(pool) == vm_names(pool)                          # every VM of the pool, once

    rem = launch(doc, pool, "Restore", dict(answers, survey_action="remove"), project=project)
    assert rem.status == "successful", rem.stdout[-3000:]
    assert restored(pool) == []


def test_verify(doc, pool):
    job = launch(doc, pool, "Verify (health check)", {"survey_scratch_sr": "nfs", "survey_vms": "tiny-halted"})
    assert job.status == "successful", job.stdout[-3000:]
    assert any("health check of pool tiny: 1 VM(s), 1 ok, 0 failed" in m for m in job.messages()), job.messages()
    assert restored(pool) == []


# ---------------------------------------------------------------- the doc drives the test


def edited_doc(tmp_path, old, new):
    text = awxjob.DOC.read_text()
    assert old in text
    copy = tmp_path / "awx.md"
    copy.write_text(text.replace(old, new, 1))
    return awxjob.parse_doc(copy)


def test_renaming_an_injector_in_the_doc_breaks_the_rehearsal(tmp_path, pool):
    edited = edited_doc(tmp_path, "XAPI_PASSWORD_FILE: '{{", "XAPI_SECRET_FILE: '{{")
    with pytest.raises(AssertionError, match="missing required arguments: password"):
        rehearse_generate_for_one_vm(edited, pool, name="drift-injector")


def test_the_old_password_injector_leaks_into_the_runner_artifacts(tmp_path, pool):
    """The doc used to inject the password as XAPI_PASSWORD: the job worked, but ansible-runner wrote
    it into artifacts/<id>/command (the job's environment, suppress_env_files or not). The scan of
    every file the runner wrote catches it; the file injector of the doc does not leak."""
    edited = edited_doc(tmp_path, "XAPI_PASSWORD_FILE: '{{ tower.filename.password }}'", "XAPI_PASSWORD: '{{ password }}'")
    with pytest.raises(AssertionError, match=r"secret in .*/artifacts/[^/]+/command"):
        rehearse_generate_for_one_vm(edited, pool, name="old-password-injector")


def test_renaming_a_survey_variable_in_the_doc_breaks_the_rehearsal(tmp_path, doc, pool):
    rehearse_generate_for_one_vm(doc, pool)                       # passes with the doc as it is
    edited = edited_doc(tmp_path, '{"variable": "survey_vms"', '{"variable": "survey_vm_list"')   # Restore's survey
    with pytest.raises(AssertionError):
        rehearse_generate_for_one_vm(edited, pool, name="drift-survey")


def test_the_old_relative_mapping_path_is_refused_and_writes_nothing(tmp_path, pool):
    """The doc used to pass the survey's project-relative path as is: generate then wrote the mapping
    into the installed collection's playbooks/ (the imported playbook's directory), and validate read
    it from there. The role now refuses a relative path before doing anything."""
    old = ("\"{{ (lookup('ansible.builtin.env', 'AWX_ISOLATED_DATA_DIR') ~ '/../../project/' ~ survey_mapping_file)"
           " if survey_mapping_file | default('', true) else '' }}\"")
    edited = edited_doc(tmp_path, old, "\"{{ survey_mapping_file | default('', true) }}\"")
    collection = pool["collections"] / "ansible_collections" / "xapi" / "backup"
    before = sorted(str(p) for p in collection.rglob("*"))
    job = launch(edited, pool, "Restore", {"survey_action": "generate", "survey_mapping_file": "restore/x.yml"},
                 name="relative-mapping")
    assert job.status == "failed"
    assert any("must be an absolute path" in m for m in job.messages()), job.messages()
    assert sorted(str(p) for p in collection.rglob("*")) == before
    assert not (job.private_data_dir / "project" / "restore" / "x.yml").exists()
