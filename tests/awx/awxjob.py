# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a job template of docs/awx.md the way AWX runs it: through ansible-runner.

What AWX does for a job, and what this module does in its place (facts from the AWX sources:
awx/main/models/credential.py ``CredentialType.inject_credential``, awx/main/tasks/jobs.py
``build_private_data_files`` / ``build_extra_vars_file`` / ``build_env``; no code copied):

- the credential type's *injectors* are Jinja templates rendered (sandboxed) with the credential's
  inputs; ``file`` templates are written to files in the private data directory and their paths
  exposed as ``tower.filename.<name>``; ``env`` goes to the job's environment, ``extra_vars`` to
  its extra variables;
- the extra variables are the job template's *Variables* (may hold Jinja), then workflow artifacts
  and survey answers, which AWX marks ``!unsafe`` (default ``ALLOW_JINJA_IN_EXTRA_VARS=template``);
  a survey fills in defaults, enforces required/min/max/choices and drops answers to variables it
  does not ask for;
- ansible-runner gets ``project/`` (a checkout of the project), ``inventory/``, ``env/extravars``
  and the environment, with ``suppress_env_files`` (AWX_RUNNER_OMIT_ENV_FILES); ansible-runner
  still records the whole environment in ``artifacts/<id>/command``, which is why the documented
  credential type injects the password as a file (``XAPI_PASSWORD_FILE``), never as a variable;
- the job's result is its event stream; ``set_stats`` data is the ``artifact_data`` of the
  ``playbook_on_stats`` event, which AWX shows as the job's artifacts and hands to the next
  workflow node as extra variables.

Everything configurable is PARSED from docs/awx.md (``parse_doc``), so the document and the test
cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tests.tools.poller import BackgroundPoller

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "awx.md"
PROJECT = REPO / "examples" / "awx-project"


# ---------------------------------------------------------------- docs/awx.md


class DocError(AssertionError):
    pass


def _code_blocks(text: str):
    """[(language, body)] of the fenced code blocks of a Markdown text, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


def _block_after(text: str, marker: str, language: str) -> str:
    at = text.find(marker)
    if at < 0:
        raise DocError("docs/awx.md: %r not found" % marker)
    for lang, body in _code_blocks(text[at:]):
        if lang == language:
            return body
    raise DocError("docs/awx.md: no %s block after %r" % (language, marker))


def parse_doc(path: Path = DOC) -> dict:
    """{"credential_type": {"inputs", "injectors"}, "templates": {title: {playbook, variables, survey}}}."""
    text = path.read_text()
    credential_type = {
        "inputs": yaml.safe_load(_block_after(text, "**Input configuration**", "yaml")),
        "injectors": yaml.safe_load(_block_after(text, "**Injector configuration**", "yaml")),
    }
    section = text[text.index("## 5. Job templates"):]
    section = section[:section.index("\n## ", 4)] if "\n## " in section[4:] else section
    templates = {}
    for part in re.split(r"^### ", section, flags=re.M)[1:]:
        head = part.splitlines()[0]
        m = re.match(r"(.+?) — `([^`]+)`", head)
        if not m:
            continue
        blocks = _code_blocks(part)
        variables = next((yaml.safe_load(b) for lang, b in blocks if lang == "yaml"), None) or {}
        survey = next((json.loads(b) for lang, b in blocks if lang == "json"), None)
        templates[m.group(1).strip()] = {"playbook": m.group(2), "variables": variables, "survey": survey}
    if not templates:
        raise DocError("docs/awx.md: no job template found in section 5")
    return {"credential_type": credential_type, "templates": templates}


# ---------------------------------------------------------------- credential type


def _render(template, namespace):
    env = ImmutableSandboxedEnvironment()
    return env.from_string(template).render(**namespace)


def inject_credential(credential_type: dict, inputs: dict, private_data_dir: Path):
    """(env, extra_vars, files) as AWX's inject_credential builds them from the type's YAML."""
    fields = credential_type["inputs"].get("fields", [])
    known = {f["id"] for f in fields}
    unknown = set(inputs) - known
    if unknown:
        raise DocError("credential inputs not in the credential type: %s" % sorted(unknown))
    for required in credential_type["inputs"].get("required", []):
        if not inputs.get(required):
            raise DocError("credential input %r is required" % required)
    namespace = {f["id"]: inputs.get(f["id"], False if f.get("type") == "boolean" else "") for f in fields}
    injectors = credential_type["injectors"] or {}
    files = {}
    filenames = {}
    for key, template in (injectors.get("file") or {}).items():
        name = key.split(".", 1)[1] if "." in key else None
        # AWX: tempfile.mkstemp in <private data dir>/env, mode 0600 (outside the artifacts)
        handle, name_of_file = tempfile.mkstemp(dir=str(private_data_dir / "env"))
        os.close(handle)
        path = Path(name_of_file)
        path.write_text(_render(template, namespace))
        os.chmod(path, 0o600)
        files[key] = path
        if name:
            filenames[name] = str(path)
        else:
            filenames = str(path)
    namespace["tower"] = namespace["awx"] = {"filename": filenames}
    env = {k: _render(v, namespace) for k, v in (injectors.get("env") or {}).items()}
    extra_vars = {k: _render(v, namespace) for k, v in (injectors.get("extra_vars") or {}).items()}
    return env, extra_vars, files


# ---------------------------------------------------------------- survey


def survey_answers(survey: dict | None, answers: dict) -> dict:
    """The extra variables a launch with these answers gives: defaults filled, checked like AWX,
    answers to questions the survey does not ask dropped."""
    if not survey:
        return {}
    out = {}
    for q in survey["spec"]:
        var = q["variable"]
        if var in answers:
            value = answers[var]
        elif q.get("default") not in (None, ""):
            value = q["default"]
        else:
            value = None
        if value in (None, ""):
            if q.get("required"):
                raise DocError("survey question %r is required" % var)
            continue
        kind = q["type"]
        if kind == "multiplechoice":
            choices = q["choices"].split("\n") if isinstance(q["choices"], str) else q["choices"]
            if value not in choices:
                raise DocError("survey answer %r for %r is not one of %s" % (value, var, choices))
        elif kind == "integer":
            value = int(value)
            if not q.get("min", value) <= value <= q.get("max", value):
                raise DocError("survey answer %r for %r out of range" % (value, var))
        elif kind in ("text", "textarea", "password"):
            if len(str(value)) > int(q.get("max", 1024)) or len(str(value)) < int(q.get("min", 0)):
                raise DocError("survey answer for %r has a bad length" % var)
        out[var] = value
    return out


# ---------------------------------------------------------------- extra vars file


class Unsafe(str):
    pass


def _unsafe(value):
    if isinstance(value, str):
        return Unsafe(value)
    if isinstance(value, dict):
        return {k: _unsafe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsafe(v) for v in value]
    return value


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Unsafe, lambda dumper, data: dumper.represent_scalar("!unsafe", str(data)))


def extra_vars_yaml(template_vars: dict, unsafe_vars: dict) -> str:
    merged = dict(template_vars)
    merged.update(_unsafe(unsafe_vars))
    return yaml.dump(merged, Dumper=_Dumper, default_flow_style=False)


# ---------------------------------------------------------------- simulated pools as AWX targets


def start_pool(workdir: Path, pool_file: str, name: str, **options):
    """A simulator of tests/xapisim/pools/<pool_file>.yml with a password nothing else contains (the
    scans for secrets must not match a common word; "xapisim" is also in the CA's subject)."""
    from tests.xapisim.fixture import start_simulator

    spec = yaml.safe_load((REPO / "tests" / "xapisim" / "pools" / (pool_file + ".yml")).read_text())
    spec["pool"]["password"] = "pw-" + secrets.token_hex(12)
    (workdir / (name + ".yml")).write_text(yaml.safe_dump(spec))
    return start_simulator(str(workdir / (name + ".yml")), str(workdir / name), **options)


def pool_target(sim, workdir: Path, repo: Path, collections: Path, name: str, **host_vars) -> dict:
    """What a job needs to run against this simulated pool master: the inventory host (TLS verified
    with the credential's CA, the helper's plain http on localhost), its credential and secrets."""
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "xapi_backup_hostname": sim.info["tls_url"],
        "xapi_backup_repository": str(repo),
        "xapi_backup_helper_xapi_url": sim.info["url"],
    }
    host.update(host_vars)
    return {"sim": sim, "workdir": workdir, "repo": repo, "collections": collections,
            "inventory": {"all": {"children": {"xapi_pools": {"hosts": {name: host}}}}},
            "credential": {"username": "root", "password": sim.info["password"],
                           "ca": Path(sim.info["ca_file"]).read_text()},
            "password": sim.info["password"], "pool_uuid": sim.info["pool_uuid"]}


# ---------------------------------------------------------------- the job


class SessionRecorder(BackgroundPoller):
    """Every XAPI session the simulator holds while a job runs (polled), to look for in the output."""

    def __init__(self, sim):
        super().__init__()
        self.sim = sim
        self.refs = set()

    def poll(self):
        try:
            sessions = self.sim.state()["tables"].get("session", {})
            self.refs.update(sessions)
            self.refs.update(rec.get("uuid", "") for rec in sessions.values())
        except Exception:  # noqa: BLE001 - the simulator may be busy; the next poll catches up
            pass

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.refs.discard("")


class Job:
    """The outcome of one job: status, rc, events, stdout, artifacts, the files the runner wrote."""

    def __init__(self, runner, private_data_dir: Path, inputs: set, sessions: set):
        self.status = runner.status
        self.rc = runner.rc
        self.events = list(runner.events)
        self.stdout = runner.stdout.read()
        self.private_data_dir = private_data_dir
        self.inputs = inputs
        self.sessions = sessions
        stats = [e for e in self.events if e.get("event") == "playbook_on_stats"]
        self.artifacts = (stats[-1]["event_data"].get("artifact_data") or {}) if stats else {}

    def written_files(self):
        """Every file under the private data dir except the inputs the job was given."""
        return [p for p in self.private_data_dir.rglob("*") if p.is_file() and p not in self.inputs]

    def item_results(self, task_name: str):
        """{item label: event name} of a looped task's per-item events."""
        out = {}
        for e in self.events:
            data = e.get("event_data", {})
            if e.get("event", "").startswith("runner_item_on_") and data.get("task") == task_name:
                res = data.get("res", {})
                label = res.get("_ansible_item_label", res.get("item"))
                out[json.dumps(label) if not isinstance(label, str) else label] = e["event"]
        return out

    def messages(self):
        """Every debug/fail msg in the event stream (lists flattened)."""
        out = []
        for e in self.events:
            res = e.get("event_data", {}).get("res", {})
            msg = res.get("msg")
            if isinstance(msg, list):
                out.extend(str(m) for m in msg)
            elif msg is not None:
                out.append(str(msg))
        return out


def run_job(doc: dict, title: str, *, workdir: Path, inventory: dict, credential: dict | None,
            answers: dict | None = None, artifacts: dict | None = None, collections_path: Path,
            extra_env: dict | None = None, sim=None, limit: str | None = None, check: bool = False,
            project: Path = PROJECT, name: str | None = None, machine: dict | None = None) -> Job:
    """Launch job template ``title`` of ``doc`` with these survey answers (and the artifacts of a
    previous workflow node), in a fresh private data directory under ``workdir``."""
    import ansible_runner

    template = doc["templates"][title]
    pdd = workdir / (name or re.sub(r"\W+", "-", title.lower()).strip("-"))
    if pdd.exists():
        shutil.rmtree(pdd)
    (pdd / "env").mkdir(parents=True)
    (pdd / "inventory").mkdir()
    shutil.copytree(project, pdd / "project")
    (pdd / "inventory" / "hosts.json").write_text(json.dumps(inventory))

    env = {
        "ANSIBLE_COLLECTIONS_PATH": str(collections_path),   # the installed tarball, not the checkout
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-local"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
    }
    cred_extra = {}
    inputs = {pdd / "inventory" / "hosts.json"}
    if credential is not None:
        cred_env, cred_extra, files = inject_credential(doc["credential_type"], credential, pdd)
        env.update(cred_env)
        inputs.update(files.values())
    env.update(extra_env or {})
    unsafe = dict(cred_extra)
    unsafe.update(artifacts or {})
    unsafe.update(survey_answers(template["survey"], answers or {}))
    (pdd / "env" / "extravars").write_text(extra_vars_yaml(template["variables"], unsafe))
    (pdd / "env" / "envvars").write_text(yaml.safe_dump(env))
    inputs.update({pdd / "env" / "extravars", pdd / "env" / "envvars"})
    inputs.update(p for p in (pdd / "project").rglob("*") if p.is_file())

    # Machine credential: AWX passes the user on the command line and the key through ssh-agent
    # (ansible-runner's ssh_key: a FIFO in the artifacts, added to an agent, then removed)
    args = ["-u", machine["username"]] if machine else []
    if check:
        args.append("--check")
    cmdline = " ".join(args) or None
    recorder = SessionRecorder(sim) if sim is not None else None
    if recorder:
        recorder.__enter__()
    try:
        runner = ansible_runner.run(
            private_data_dir=str(pdd), playbook=template["playbook"], quiet=True, forks=10,
            limit=limit, cmdline=cmdline, suppress_env_files=True, timeout=300,
            envvars=env, ssh_key=machine["ssh_key_data"] if machine else None)
    finally:
        if recorder:
            recorder.__exit__(None, None, None)
    return Job(runner, pdd, inputs, recorder.refs if recorder else set())
