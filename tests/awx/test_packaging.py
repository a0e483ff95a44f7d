# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a user installs: the collection tarball, the execution environment built from it, the
changelog configuration and the galaxy metadata (issue 15, ecosystem)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.awx.conftest import REPO, VENV_BIN, galaxy_version

# What a tarball must never ship (issue 15): internal notes, build and lint configuration, npm lock
# files, test output, development environments.
FORBIDDEN = [
    "Makefile", "pytest.ini", ".ansible-lint", ".yamllint", ".gitignore", "docs/dev/", "bench/", "dist/",
    "tests/output/", "tests/xo_peer/", "node_modules/", "package-lock.json", ".venv", ".tmp/", ".cache/",
    ".ci/", "__pycache__/", ".pyc",
]
REQUIRED = [
    "MANIFEST.json", "README.md", "LICENSE", "requirements.txt", "bindep.txt", "meta/runtime.yml",
    "meta/execution-environment.yml", "docs/awx.md", "docs/docsite/links.yml", "docs/docsite/extra-docs.yml",
    "playbooks/backup.yml", "roles/pool_backup/tasks/main.yml", "plugins/modules/vm_info.py",
    "roles/helper/files/xapi-backup-helper", "examples/awx-project/backup.yml",
    "examples/awx-project/collections/requirements.yml", "changelogs/config.yaml",
]


def tarball_names(tarball: Path) -> list:
    with tarfile.open(tarball) as tar:
        return tar.getnames()


def forbidden_in(names) -> list:
    bad = []
    for name in names:
        for pattern in FORBIDDEN:
            if pattern.endswith("/"):
                hit = name.startswith(pattern) or ("/" + pattern) in name or name == pattern.rstrip("/")
            else:
                hit = name == pattern or name.endswith("/" + pattern) or (pattern.startswith(".") and name.endswith(pattern))
            if hit:
                bad.append(name)
                break
    return bad


def test_the_tarball_ships_the_product_and_nothing_internal(collection_tarball):
    names = tarball_names(collection_tarball)
    assert forbidden_in(names) == []
    missing = [r for r in REQUIRED if r not in names]
    assert missing == []
    assert collection_tarball.stat().st_size < 2 * 1024 * 1024       # no images, no node_modules


def test_the_forbidden_list_would_catch_what_the_old_build_ignore_shipped():
    old = ["Makefile", "pytest.ini", ".ansible-lint", "docs/dev/requests.md", "tests/xo_peer/package-lock.json",
           "tests/output/junit.xml", "roles/x/__pycache__/a.pyc"]
    assert sorted(forbidden_in(old)) == sorted(old)
    assert forbidden_in(["docs/awx.md", "roles/helper/files/xapi-backup-helper", "tests/unit/test_x.py"]) == []


def test_galaxy_metadata_has_a_category_tag():
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    # Galaxy's category tags (the ones galaxy.ansible.com lists collections under)
    assert set(galaxy["tags"]) & {"tools", "infrastructure", "cloud", "database", "monitoring", "networking",
                                  "security", "storage", "linux", "windows", "application"}
    assert all(t == t.lower() and t.replace("_", "").isalnum() for t in galaxy["tags"])


# ---------------------------------------------------------------- execution environment


def ee_context_problems(context: Path, tarball: Path) -> list:
    """Why an ansible-builder build context would not install THIS tarball (empty: it would)."""
    problems = []
    copied = context / "_build" / "collections" / tarball.name
    if not copied.is_file():
        return ["%s is not in the build context" % tarball.name]
    if hashlib.sha256(copied.read_bytes()).digest() != hashlib.sha256(tarball.read_bytes()).digest():
        problems.append("the build context holds another %s" % tarball.name)
    reqs = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    wanted = {"name": "collections/" + tarball.name, "type": "file"}
    if wanted not in reqs.get("collections", []):
        problems.append("requirements.yml does not install %s as a file: %s" % (tarball.name, reqs))
    containerfile = (context / "Containerfile") if (context / "Containerfile").exists() else (context / "Dockerfile")
    text = containerfile.read_text()
    if "COPY _build /build" not in text or "WORKDIR /build" not in text:
        problems.append("the galaxy stage does not run in /build")
    if "git" in yaml.safe_dump(reqs):
        problems.append("a collection still comes from git")
    return problems


def builder_create(ee_file: Path, context: Path):
    proc = subprocess.run([str(VENV_BIN / "ansible-builder"), "create", "-f", str(ee_file), "--context", str(context)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


@pytest.fixture(scope="module")
def ee_context(tmp_path_factory, collection_tarball):
    """`ansible-builder create` of execution-environment.yml with the tarball where the file expects it
    (dist/ beside it), in a scratch copy so the checkout is untouched. No container engine needed."""
    work = tmp_path_factory.mktemp("ee")
    shutil.copy(REPO / "execution-environment.yml", work / "execution-environment.yml")
    (work / "dist").mkdir()
    shutil.copy(collection_tarball, work / "dist" / collection_tarball.name)
    builder_create(work / "execution-environment.yml", work / "context")
    return work


def test_ansible_builder_create_puts_the_local_tarball_in_the_build_context(ee_context, collection_tarball):
    assert ee_context_problems(ee_context / "context", collection_tarball) == []


def test_the_context_check_sees_a_missing_or_foreign_tarball(tmp_path, ee_context, collection_tarball):
    # ansible-builder only WARNS when an additional_build_files source is missing: our check must fail
    (tmp_path / "execution-environment.yml").write_text((REPO / "execution-environment.yml").read_text())
    builder_create(tmp_path / "execution-environment.yml", tmp_path / "context")
    assert ee_context_problems(tmp_path / "context", collection_tarball) == \
        ["%s is not in the build context" % collection_tarball.name]
    other = tmp_path / "other" / collection_tarball.name
    other.parent.mkdir()
    other.write_bytes(b"not the collection")
    assert ee_context_problems(ee_context / "context", other) == ["the build context holds another %s" % other.name]


def test_the_ee_file_pins_the_version_of_galaxy_yml():
    ee = yaml.safe_load((REPO / "execution-environment.yml").read_text())
    name = "xapi-backup-%s.tar.gz" % galaxy_version()
    assert ee["additional_build_files"] == [{"src": "dist/" + name, "dest": "collections"}]
    assert ee["dependencies"]["galaxy"]["collections"] == [{"name": "collections/" + name, "type": "file"}]


def test_builder_introspection_finds_the_collection_dependencies(ee_context, installed_collections):
    """The builder stage runs introspect.py over the installed collections: our meta/execution-environment.yml
    must yield the Python packages of requirements.txt and the system packages of bindep.txt."""
    script = ee_context / "context" / "_build" / "scripts" / "introspect.py"
    proc = subprocess.run([sys.executable, str(script), "introspect", str(installed_collections)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60, check=True)
    found = yaml.safe_load(proc.stdout)
    python = " ".join(found["python"])
    system = " ".join(found["system"])
    assert "XenAPI" in python and "zstandard" in python
    assert "ansible-core" not in python                  # the EE's own ansible_core wins
    assert "openssh-clients [platform:rpm]" in system


# ---------------------------------------------------------------- changelog


def test_the_changelog_is_written_inside_the_collection_and_lints_clean(tmp_path):
    config = yaml.safe_load((REPO / "changelogs" / "config.yaml").read_text())
    for output in config["output"]:
        target = (REPO / output["file"]).resolve()
        assert REPO.resolve() in target.parents, output
    proc = subprocess.run([str(VENV_BIN / "antsibull-changelog"), "lint"], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout


def test_changelog_lint_rejects_a_broken_fragment(tmp_path):
    """The lint in `make lint` is real: a fragment with an unknown section fails it."""
    copy = tmp_path / "coll"
    (copy / "changelogs" / "fragments").mkdir(parents=True)
    shutil.copy(REPO / "changelogs" / "config.yaml", copy / "changelogs" / "config.yaml")
    shutil.copy(REPO / "changelogs" / "changelog.yaml", copy / "changelogs" / "changelog.yaml")
    shutil.copy(REPO / "galaxy.yml", copy / "galaxy.yml")
    (copy / "changelogs" / "fragments" / "1-bad.yml").write_text("new_stuff:\n  - oops\n")
    proc = subprocess.run([str(VENV_BIN / "antsibull-changelog"), "lint"], cwd=copy, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=60, check=False, env=dict(os.environ))
    assert proc.returncode != 0 and "1-bad.yml" in proc.stdout, proc.stdout
