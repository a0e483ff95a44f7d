#!/usr/bin/env python3
"""Start-up cost of xapi-backup-helper on dom0's interpreter (issue 14): medians of alternating starts.

    .venv/bin/python bench/bench_startup.py [--runs 15] [--before REV]

Rows: the helper run as a script (``python helper``, compiled on every start), the helper as every task
starts it (``python -c HELPER_LAUNCHER helper``, compiled code kept in ``__pycache__``), and the floor
(``python -c "import zstandard, argparse"``); with ``--before``, the helper of git revision REV as a
script too. The subcommand is ``status`` of a missing file: no work after the start.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(REPO, "roles", "helper", "files", "xapi-backup-helper")
PY36 = os.path.join(REPO, ".venv36", "bin", "python")
sys.path.insert(0, os.path.join(REPO, ".tmp", "collections"))
# pylint: disable-next=wrong-import-position
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import launch_argv  # noqa: E402

os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as on dom0
ARGS = ["status", "--status-file", "/nonexistent/status.json"]


def variants(python, workdir, before):
    helper = os.path.join(workdir, "bin", "xapi-backup-helper")  # a copy: its __pycache__ stays out of the tree
    os.makedirs(os.path.dirname(helper))
    shutil.copyfile(HELPER, helper)
    rows = [("script: python helper", [python, helper] + ARGS),
            ("launcher: python -c HELPER_LAUNCHER helper (as tasks start it)", launch_argv(python, helper) + ARGS),
            ("floor: python -c 'import zstandard, argparse'", [python, "-c", "import zstandard, argparse"])]
    if before:
        old = os.path.join(workdir, "before-helper")
        with open(old, "wb") as handle:
            handle.write(subprocess.run(["git", "-C", REPO, "show", "%s:roles/helper/files/xapi-backup-helper" % before],
                                        stdout=subprocess.PIPE, check=True).stdout)
        rows.insert(0, ("script at %s" % before, [python, old] + ARGS))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--python", default=PY36 if os.path.exists(PY36) else sys.executable)
    parser.add_argument("--before", default=None, help="also the helper of this git revision, as a script")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        rows = variants(args.python, workdir, args.before)
        times = {name: [] for name, _argv in rows}
        for _round in range(args.runs + 1):  # the first round compiles the launcher's cache: not counted
            for name, argv in rows:
                started = time.perf_counter()
                subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
                if _round:
                    times[name].append(time.perf_counter() - started)
    print("| start (%s, medians of %d alternating runs, load %.1f) | wall s |" % (args.python, args.runs, os.getloadavg()[0]))
    print("|---|---:|")
    for name, _argv in rows:
        print("| %s | %.3f |" % (name, statistics.median(times[name])))


if __name__ == "__main__":
    main()
