# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""AWX rehearsal over SSH: the install helper and backup job templates against a pool master that is
a network namespace with its own sshd and simulator (tests/integration/netns.py), with AWX's two
credentials: Machine (user on the command line, private key through ssh-agent) and XenServer XAPI
(docs/awx.md's injectors). The helper runs on the master, under the master's Python 3.6."""

from __future__ import annotations

import json
import secrets
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

from tests.awx import awxjob

sys.path.insert(0, str(awxjob.REPO / "tests" / "integration"))
import netns  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = [pytest.mark.slow, pytest.mark.ssh]

REPOSITORY = "/opt/xapi-backup/repository"


@pytest.fixture(scope="module")
def master(tmp_path_factory, installed_collections):
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("awx-ssh")
    spec = yaml.safe_load((awxjob.REPO / "tests" / "xapisim" / "pools" / "tiny.yml").read_text())
    spec["pool"]["password"] = "pw-" + secrets.token_hex(12)
    (workdir / "tiny.yml").write_text(yaml.safe_dump(spec))
    with netns.SshHosts(workdir / "hosts", count=1, name_prefix="awx") as hosts:
        host = hosts.hosts[0]
        proc, ready = hosts.start_service(host, [
            sys.executable, "-m", "tests.xapisim", "serve", "--pool", str(workdir / "tiny.yml"),
            "--state-dir", str(workdir / "sim"), "--port", "0", "--bind", "0.0.0.0"], cwd=str(awxjob.REPO))
        try:
            port = urllib.parse.urlsplit(ready["url"]).port
            connection = hosts.host_vars(host)
            del connection["ansible_ssh_private_key_file"], connection["ansible_user"]   # from the Machine credential
            connection["ansible_ssh_common_args"] = connection["ansible_ssh_common_args"].replace("-o IdentitiesOnly=yes", "")
            host_vars = dict(connection, **{
                "xapi_backup_hostname": "http://%s:%d" % (host.address, port),
                "xapi_backup_helper_xapi_url": "http://localhost:%d" % port,
                "xapi_backup_repository": REPOSITORY,
            })
            yield {"host": host, "ready": ready, "workdir": workdir, "collections": installed_collections,
                   "inventory": {"all": {"children": {"xapi_pools": {"hosts": {"awx-master": host_vars}}}}},
                   "machine": {"username": "root", "ssh_key_data": hosts.private_key.read_text()},
                   "credential": {"username": "root", "password": ready["password"],
                                  "ca": Path(ready["ca_file"]).read_text()}}
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def launch(doc, master, title, answers=None, credential=True):
    job = awxjob.run_job(doc, title, workdir=master["workdir"], inventory=master["inventory"], answers=answers,
                         collections_path=master["collections"], machine=master["machine"],
                         credential=master["credential"] if credential else None,
                         extra_env={"ANSIBLE_HOST_KEY_CHECKING": "True"})
    key = master["machine"]["ssh_key_data"].strip().splitlines()[1]     # a line of the private key
    leaks = [p for p in job.written_files() if key.encode() in p.read_bytes() or
             master["credential"]["password"].encode() in p.read_bytes() and p.name != "command"]
    assert leaks == []
    assert master["credential"]["password"] not in json.dumps(job.events)
    assert not list(job.private_data_dir.rglob("ssh_key_data"))          # the agent's FIFO is gone
    return job


def test_install_helper_then_backup_over_ssh(master):
    doc = awxjob.parse_doc()
    job = launch(doc, master, "Install helper", credential=False)
    assert job.status == "successful", job.stdout[-3000:]
    assert master["host"].private("/opt/xapi-backup/bin/xapi-backup-helper").is_file()

    job = launch(doc, master, "Backup", {"survey_run_id": "awx-ssh-1", "survey_vm_names": "tiny-running"})
    assert job.status == "successful", job.stdout[-3000:]
    assert job.item_results("Back up VMs into the repository") == {"tiny-running": "runner_item_on_ok"}
    summary = job.artifacts["xapi_backup_runs"]["awx-master"]
    assert summary["backed_up"] == 1 and summary["failed"] == 0
    report = master["host"].private(summary["report"])
    assert summary["line"] in report.read_text()
