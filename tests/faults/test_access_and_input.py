# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reaching the pool (member login, wrong CA, wrong password) and bad input to every module and
playbook variable: a clear one-line error, and nothing changed in the pool or the repository.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

pytestmark = pytest.mark.slow


def pool_fingerprint(env):
    """What a failed task must not change: VMs, VDIs, our snapshots, the repository's files."""
    api = env.api
    # regular files: a failed export may leave the (empty) directory of its VM, never a file
    files = sorted(str(p.relative_to(env.repo)) for p in env.repo.rglob("*") if p.is_file()) if env.repo.exists() else None
    return {"vms": sorted(api.VM.get_all()), "vdis": sorted(api.VDI.get_all()),
            "ours": sorted(r["uuid"] for r in env.our_snapshots()), "files": files}


@pytest.fixture(scope="module")
def good_backup(shared_env):
    result = shared_env.run_task("vm_export", {"vm": "tiny-halted", "run_id": "base"})
    assert not result.get("failed"), result.get("msg")
    return result


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory):
    """A CA that did not sign the simulator's certificate."""
    directory = tmp_path_factory.mktemp("wrongca")
    key, cert = directory / "ca.key", directory / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=not the pool CA",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert)


def assert_one_line_failure(result, *words):
    assert result.get("failed") is True, result
    msg = result["msg"]
    assert "\n" not in msg.strip(), msg
    assert not msg.startswith("unexpected error"), msg
    low = msg.lower()
    assert any(w.lower() in low for w in words), msg


# ---------------------------------------------------------------- reaching the pool


def test_login_to_a_pool_member_follows_host_is_slave(env, good_backup):
    member = [h for h in env.sim.hosts if not h["master"]][0]
    result, info = env.run_tasks([("vm_export", {"vm": "tiny-running", "run_id": "via-member", "hostname": member["url"]}),
                                  ("backup_info", {})])
    assert not result.get("failed"), result.get("msg")
    logins = [c for c in result["xapi_calls"] if c["method"] == "session.login_with_password"]
    assert len(logins) == 2                       # the member answered HOST_IS_SLAVE, the master logged in
    assert result["backup_id"] in env.repo_guarantees(info["backups"])
    env.no_leftovers()


def test_certificate_from_the_wrong_ca_is_refused(env, good_backup, wrong_ca):
    before = pool_fingerprint(env)
    result = env.run_task("vm_export", {"vm": "tiny-running", "run_id": "wrong-ca", "hostname": env.sim.tls_url,
                                        "ca_path": wrong_ca})
    assert_one_line_failure(result, "certificate", "CERTIFICATE_VERIFY_FAILED", "ssl")
    assert [c for c in result["helper_calls"] if c["subcommand"] == "export"] == []
    assert pool_fingerprint(env) == before


def test_helper_refuses_the_wrong_ca_on_a_remote_transfer(env, good_backup, wrong_ca):
    """The control plane trusts the pool (right CA); the helper's own HTTPS pull gets the wrong CA."""
    before = pool_fingerprint(env)
    result, info = env.run_tasks([("vm_export", {"vm": "tiny-running", "run_id": "wrong-ca-helper",
                                                 "hostname": env.sim.tls_url, "ca_path": env.sim.ca_file,
                                                 "transfer": "remote", "helper_ca_file": wrong_ca}),
                                  ("backup_info", {})])
    assert_one_line_failure(result, "certificate", "CERTIFICATE_VERIFY_FAILED", "TLS", "ssl")
    env.no_leftovers()
    assert [b for b in info["backups"] if b.get("run_id") == "wrong-ca-helper"] == []
    after = pool_fingerprint(env)
    assert (after["vms"], after["ours"], after["files"]) == (before["vms"], before["ours"], before["files"])


def test_wrong_password(env, good_backup):
    before = pool_fingerprint(env)
    wrong = "wrong-%s" % env.password[::-1]
    result = env.run_task("vm_export", {"vm": "tiny-running", "run_id": "wrong-pw", "password": wrong})
    assert_one_line_failure(result, "SESSION_AUTHENTICATION_FAILED", "authentication")
    assert wrong not in json.dumps(result)         # the wrong password is a secret too
    for where, text in env.outputs[-2:]:
        assert wrong not in text, where
    assert pool_fingerprint(env) == before


# ---------------------------------------------------------------- bad input to every module

UNKNOWN_UUID = "0badc0de-0000-4000-8000-000000000000"

BAD_MODULE_INPUT = [
    ("vm_export", {"vm": "no-such-vm"}, ["no VM named"]),
    ("vm_export", {"vm": UNKNOWN_UUID}, ["does not exist"]),
    ("vm_export", {"vm": "tiny-halted", "codec": "lz4"}, ["codec", "one of"]),
    ("vm_export", {"vm": "tiny-halted", "level": "high"}, ["level", "int"]),
    ("vm_export", {"vm": "tiny-halted", "repository": "relative/repo"}, ["absolute"]),
    ("vm_export", {"vm": "tiny-halted", "stall_timeout": "soon"}, ["stall_timeout"]),
    ("vm_export", {"vm": "tiny-halted", "no_such_option": 1}, ["Unsupported parameters", "no_such_option"]),
    ("vm_export", {"vm": "tiny-halted", "hostname": "ftp://pool.example"}, ["hostname", "http"]),
    ("vm_export", {"vm": "tiny-halted", "timeout": "forever"}, ["timeout"]),
    ("vm_export", {"vm": "tiny-halted", "transfer": "carrier-pigeon"}, ["transfer", "one of"]),
    ("vm_import", {"vm_uuid": UNKNOWN_UUID}, ["no complete backup", "no backup"]),
    ("vm_import", {"backup": "not/a/backup-id"}, ["backup"]),
    ("vm_import", {"backup": "x/y/z", "vm_uuid": UNKNOWN_UUID}, ["mutually exclusive"]),
    ("vm_import", {"vm_uuid": "@GOOD_VM@", "sr": "no-such-sr"}, ["SR", "sr"]),
    ("vm_import", {"vm_uuid": "@GOOD_VM@", "network_map": "not-a-dict"}, ["network_map", "dict"]),
    ("vm_import", {"vm_uuid": "@GOOD_VM@", "state": "sideways"}, ["state", "one of"]),
    ("backup_prune", {"keep_last": -1}, ["keep_last"]),
    ("backup_prune", {"keep_last": "many"}, ["keep_last", "int"]),
    ("backup_info", {"verify": "sometimes"}, ["verify", "one of"]),
    ("pool_dump", {"repository": "relative"}, ["absolute"]),
    ("pool_dump", {"vms": "tiny-halted,no-such-vm"}, ["no-such-vm", "no VM"]),
    ("vm_snapshot", {"vm": "no-such-vm"}, ["no VM named"]),
    ("vm_snapshot", {"vm": "tiny-running", "state": "liquid"}, ["state", "one of"]),
    ("vm_info", {"regex": "(["}, ["regex", "regular expression"]),
    ("vm_info", {"power_states": ["frozen"]}, ["power_states", "one of"]),
    # fixed after the fault matrix reported them (requests.md F4, F5)
    ("vm_export", {"vm": "tiny-halted", "run_id": "../../etc/passwd"}, ["run_id"]),
    ("backup_prune", {"keep_last": 1, "repository": "/nonexistent/xapi-backup-repo"}, ["does not exist"]),
    ("backup_info", {"repository": "/nonexistent/xapi-backup-repo"}, ["does not exist"]),
]

XAPI_ONLY = ("vm_info", "vm_snapshot")


def test_bad_input_to_every_module_is_one_line_and_changes_nothing(env, good_backup):
    check_bad_module_input(env, good_backup, BAD_MODULE_INPUT)


def check_bad_module_input(env, good_backup, inputs):
    tasks = []
    for module, args, _words in inputs:
        args = {k: (good_backup["vm_uuid"] if v == "@GOOD_VM@" else v) for k, v in args.items()}
        if module in XAPI_ONLY:
            conn = env.connection()
            args = dict({k: conn[k] for k in ("hostname", "username", "password")}, **args)
            tasks.append((module, args))
        else:
            tasks.append((module, args))
    before = pool_fingerprint(env)
    mark = len(env.request_log())
    results = []
    # the XAPI-only modules take no repository options: run them without the shared connection block
    repo_tasks = [(m, a) for m, a in tasks if m not in XAPI_ONLY]
    xapi_tasks = [(m, a) for m, a in tasks if m in XAPI_ONLY]
    if repo_tasks:
        results += env.run_tasks(repo_tasks)
    if xapi_tasks:
        results += env.run_tasks(xapi_tasks, with_connection=False)
    cases = [c for c in inputs if c[0] not in XAPI_ONLY] + [c for c in inputs if c[0] in XAPI_ONLY]
    problems = []
    for (module, args, words), result in zip(cases, results):
        try:
            assert_one_line_failure(result, *words)
        except AssertionError as exc:
            problems.append("%s %r: %s" % (module, args, str(exc).splitlines()[0][:300]))
    assert problems == [], "\n".join(problems)
    assert pool_fingerprint(env) == before
    assert env.import_requests(mark) == []
    assert not os.path.exists("/nonexistent/xapi-backup-repo")


# ---------------------------------------------------------------- bad playbook variables


def fatal_messages(output):
    """The ``msg`` of every ``fatal:``/``FAILED!`` result printed by ansible (JSON after ``=>``)."""
    msgs = []
    decoder = json.JSONDecoder()
    for match in re.finditer(r"(?:FAILED!|failed:) .*?=> ", output):
        try:
            obj, _end = decoder.raw_decode(output[match.end():])
        except ValueError:
            continue
        if isinstance(obj, dict):
            msgs.append(str(obj.get("msg", "")))
            for item in obj.get("results") or []:
                if isinstance(item, dict) and item.get("failed"):
                    msgs.append(str(item.get("msg", "")))
    return msgs


BAD_PLAYBOOK_VARS = [
    ("backup.yml", {"xapi_backup_codec": "lz4"}, ["xapi_backup_codec"]),
    ("backup.yml", {"xapi_backup_concurrency": "lots"}, ["xapi_backup_concurrency"]),
    ("backup.yml", {"xapi_backup_keep_last": -1}, ["keep_last"]),   # was F6
    ("backup.yml", {"xapi_backup_run_id": "../../escape"}, ["run id", "run_id"]),   # was F6
    ("backup.yml", {"xapi_backup_vm_names": ["no-such-vm"]}, ["no-such-vm"]),
    ("backup.yml", {"xapi_backup_repository": "relative/repo"}, ["absolute", "xapi_backup_repository"]),
    ("backup.yml", {"xapi_backup_vm_regex": "(["}, ["regex", "regular expression"]),
    ("restore.yml", {"xapi_backup_restore_vms": ["no-such-vm"]}, ["no-such-vm"]),
]


def _case_id(case):
    playbook, extra = (case.values[:2] if hasattr(case, "values") else case[:2])
    return "%s-%s" % (playbook, next(iter(extra)))


@pytest.mark.parametrize("playbook,extra,words", BAD_PLAYBOOK_VARS, ids=[_case_id(c) for c in BAD_PLAYBOOK_VARS])
def test_bad_playbook_variable_is_one_line_and_changes_nothing(env, good_backup, playbook, extra, words):
    before = pool_fingerprint(env)
    mark = len(env.request_log())
    rc, out = env.run_playbook(playbook, "-e", json.dumps(dict({"xapi_backup_run_id": "bad-input"}, **extra)))
    assert rc != 0, out[-3000:]
    msgs = fatal_messages(out)
    assert msgs, out[-3000:]
    # ansible's own role argument validation puts a fixed header line before the one error
    first = re.sub(r"^Validation of arguments failed:\s*", "", msgs[0].strip())
    assert any(w.lower() in first.lower() for w in words), first
    assert "\n" not in first.strip() and len(first) < 600, first
    assert pool_fingerprint(env) == before
    assert env.import_requests(mark) == []


def test_no_secret_in_any_output_of_this_module(env):
    env.secrets_absent()
