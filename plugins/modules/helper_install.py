#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This file only documents the action plugin plugins/action/helper_install.py; nothing of it runs on a target.

from __future__ import annotations

DOCUMENTATION = r"""
module: helper_install
short_description: Install xapi-backup-helper on a pool master without running Python modules there
version_added: 0.1.0
description:
  - Installs the collection's data-plane program C(xapi-backup-helper) (a single Python 3.6+ file) on the
    target, normally a XenServer / XCP-ng pool master.
  - Nothing runs as an Ansible Python module on the target (dom0 has Python 3.6, which ansible-core 2.17
    and later cannot drive). The action checks the interpreter with C(python3 -c ...), compares the
    installed file's C(sha256sum) with the controller's copy, transfers with the connection's file
    transfer to a temporary name and renames it into place, all with shell commands.
  - Optionally unpacks a C(zstandard) wheel from the controller into C(<prefix>/lib/pythonX.Y/) beside the
    helper's C(<prefix>/bin/), where the helper finds it; use the wheel built for the target's Python
    (zstandard 0.20.0 is the last release with CPython 3.6 wheels).
  - Then runs C(xapi-backup-helper self-test) and returns its JSON report.
  - Use the M(xapi.backup.helper_install) action through the C(xapi.backup.helper) role, which also
    downloads the wheel on the controller when asked.
options:
  src:
    description:
      - The helper file on the controller.
      - A relative path is looked up like M(ansible.builtin.copy) does (role C(files/), playbook C(files/)).
      - Default is the copy shipped in the collection, C(roles/helper/files/xapi-backup-helper).
    type: path
  dest:
    description:
      - Absolute path of the helper on the target. Its directory is created with mode C(0755).
      - The wheel goes to C(<dirname(dirname(dest))>/lib/pythonX.Y/).
    type: str
    default: /opt/xapi-backup/bin/xapi-backup-helper
  python:
    description:
      - Interpreter on the target that runs the helper (name on the PATH or absolute path).
      - It must be Python 3.6 or later; the action fails with a one-line error otherwise.
    type: str
    default: python3
  zstandard_wheel:
    description:
      - A C(zstandard) wheel on the controller to unpack on the target (with C(python3 -m zipfile -e)).
      - Its Python tag must match the target's interpreter (C(cp36) for Python 3.6) and its platform tag
        the target's machine (C(x86_64)); the action fails before transferring anything otherwise.
      - Re-unpacked only when its sha256 differs from the one recorded on the target.
    type: path
  self_test:
    description:
      - Run C(xapi-backup-helper self-test) after installing and fail if it does not report C(ok).
      - In check mode the self-test runs only when the installed helper is already current.
    type: bool
    default: true
extends_documentation_fragment:
  - xapi.backup.attributes
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - ansible.builtin.action_common_attributes.conn
attributes:
  check_mode:
    support: full
    details:
      - Reports what would change and transfers nothing.
  diff_mode:
    support: full
    details:
      - Shows the sha256 and mode of the helper (and the wheel's sha256) before and after.
  idempotent:
    support: full
  platform:
    platforms: posix
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  become:
    support: full
    details:
      - Files are staged in the connection user's remote temporary directory, then copied into place with become.
  connection:
    support: full
  delegation:
    support: full
notes:
  - Needs on the target a POSIX shell with C(sha256sum), C(stat), C(find), C(cp), C(mv) and C(uname) (all present in dom0).
  - Set C(gather_facts) to V(false) in plays against pool masters, since fact gathering is a Python module.
  - Tasks start the helper as a module, so Python keeps its compiled code in C(__pycache__) beside it. The action
    fails, in check mode too and before changing anything, when the helper's directory is a link or is owned by
    another user, or when that C(__pycache__) or a compiled file of the helper in it is a link, is owned by
    another user or is writable by group or others. Whoever can write there could run code as root in every
    backup. Fix or remove such entries by hand.
  - It also fails when a directory above the helper's is owned by another user, or is writable by group or others
    without the sticky bit, since whoever can write there could put their own helper in place. The path is
    resolved on the target as the kernel resolves it, following every link, so the directories a link leads
    into count too (with C(/opt) a link to C(/data/opt), C(/data) is judged), and so does a link owned by
    another user. More than 40 links on the way, or a walk that cannot finish, fail the same way. This walk
    runs the target's O(python) in isolated mode (C(-I)).
  - The helper puts its private C(lib/pythonX.Y) (beside C(bin), where a shipped wheel goes) first on its
    import path whenever that directory exists, with or without a wheel. The action fails the same way when
    C(lib) or C(lib/pythonX.Y) is a link, owned by another user or writable by group or others (a sticky bit
    does not help, since it stops renames, not new modules), or when any entry below it is a link, owned by another
    user or writable by group or others. The error names the first such entry.
seealso:
  - name: The helper role
    description: Role that wraps this action, with preflight checks and the wheel download.
    link: https://github.com/xapi-backup/xapi.backup/blob/main/roles/helper/README.md
author:
  - xapi.backup contributors (@xapi-backup)
"""

EXAMPLES = r"""
- name: Install the helper on every pool master
  hosts: pool_masters
  gather_facts: false
  tasks:
    - name: Install xapi-backup-helper
      xapi.backup.helper_install:
      register: helper

    - name: Show the codecs the helper found
      ansible.builtin.debug:
        var: helper.self_test

- name: Ship zstandard to an offline XCP-ng 8.x master (Python 3.6)
  hosts: pool_masters
  gather_facts: false
  tasks:
    - name: Install the helper with the zstandard wheel
      xapi.backup.helper_install:
        zstandard_wheel: files/zstandard-0.20.0-cp36-cp36m-manylinux_2_17_x86_64.manylinux2014_x86_64.whl

- name: Install into another prefix with an explicit interpreter
  hosts: pool_masters
  gather_facts: false
  tasks:
    - name: Install under /usr/local
      xapi.backup.helper_install:
        dest: /usr/local/xapi-backup/bin/xapi-backup-helper
        python: /usr/bin/python3.6
"""

RETURN = r"""
dest:
  description: Path of the helper on the target.
  returned: always
  type: str
  sample: /opt/xapi-backup/bin/xapi-backup-helper
sha256:
  description: sha256 of the helper on the controller (and, unless in check mode, on the target).
  returned: always
  type: str
  sample: 3f2a0c9d5e8b7a6f1e0d4c3b2a19081726354a5b6c7d8e9f00112233445566aa
previous_sha256:
  description: sha256 of the helper found on the target before the task, null when there was none.
  returned: always
  type: str
  sample: null
python_version:
  description: Major and minor version of the target's interpreter.
  returned: always
  type: str
  sample: "3.6"
lib_dir:
  description: Directory on the target where the wheel is (or would be) unpacked.
  returned: always
  type: str
  sample: /opt/xapi-backup/lib/python3.6
zstandard_wheel:
  description: File name of the wheel shipped, null when none was given.
  returned: always
  type: str
  sample: zstandard-0.20.0-cp36-cp36m-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
actions:
  description: What was done (or, in check mode, would be done); empty when nothing changed.
  returned: always
  type: list
  elements: str
  sample:
    - install /opt/xapi-backup/bin/xapi-backup-helper (sha256 3f2a0c9d5e8b)
self_test:
  description:
    - The JSON object printed by C(xapi-backup-helper self-test) (Python version, codecs, hashing, cores, buffer).
    - Null when O(self_test=false) or in check mode before the helper is installed.
  returned: always
  type: dict
  sample:
    ok: true
    python: "3.6.15"
    codecs: {zstandard: "0.20.0", zstd: null, pigz: "/usr/bin/pigz", zlib: "1.2.11"}
    cores: 8
"""

from ansible_collections.xapi.backup.plugins.module_utils._common import documentation_stub_main
from ansible_collections.xapi.backup.plugins.module_utils._constants import DEFAULT_HELPER_PATH, DEFAULT_HELPER_PYTHON


def argument_spec():
    """The options of xapi.backup.helper_install, shared with the action plugin that implements it."""
    return {
        "src": {"type": "path"},
        "dest": {"type": "str", "default": DEFAULT_HELPER_PATH},
        "python": {"type": "str", "default": DEFAULT_HELPER_PYTHON},
        "zstandard_wheel": {"type": "path"},
        "self_test": {"type": "bool", "default": True},
    }


def main():
    documentation_stub_main("helper_install", argument_spec(), {})


if __name__ == "__main__":
    main()
