# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ---------------------------------------------------------------------------------------------
# PRIVATE to the xapi.backup collection. This is not a public API: it may change in any release
# without notice. Modules, action plugins and module_utils of this collection only.
# ---------------------------------------------------------------------------------------------

"""Constants stated once for the whole collection. No Ansible imports.

The collection version is read from ``galaxy.yml`` (a source checkout) or ``MANIFEST.json`` (an
installed collection) next to ``plugins/``; ``FALLBACK_VERSION`` is used only where neither is
readable (a module shipped to a remote host by AnsiballZ carries neither). A unit test keeps
``FALLBACK_VERSION`` and the helper's ``HELPER_VERSION`` equal to galaxy.yml's version.
"""

from __future__ import annotations

import json
import os
import re

COLLECTION = "xapi.backup"
FALLBACK_VERSION = "0.1.0"

#: Where the helper role installs the helper on dom0 (also the default of every ``helper_path``).
DEFAULT_HELPER_PATH = "/opt/xapi-backup/bin/xapi-backup-helper"
DEFAULT_HELPER_PYTHON = "python3"
#: How the helper reaches xapi on dom0 for data transfers (docs/dev/contracts.md section 3b).
DEFAULT_HELPER_XAPI_URL = "http://localhost"
#: Seconds between two polls of a detached helper's status file.
DEFAULT_POLL_INTERVAL = 2.0
#: Seconds for one XML-RPC exchange with xapi.
DEFAULT_TIMEOUT = 60
#: Most compression threads a task may ask for: each zstd worker holds its own buffers, and 1024
#: threads measured 2.5 GiB RSS on dom0 (issue 11); no dom0 has more cores than this is useful for.
MAX_THREADS = 32
#: Migrations a backup blocks on a VM while its export runs (``VM.blocked_operations``), and the reason
#: it writes as their value: ``_snapshots.unblock_ours`` gives back only entries carrying this reason.
BLOCKED_OPERATIONS = ("migrate_send", "pool_migrate")
BLOCK_REASON = "xapi.backup: export in progress"
#: Bound of a backup's recorded ``sequence`` (exclusive): the helper's ``MAX_SEQUENCE`` (a unit test keeps them
#: equal). A manifest recording a sequence outside 1..MAX_SEQUENCE-1 is foreign or corrupt: reported, skipped,
#: never deleted, and never the "latest" backup or the one the next sequence follows.
MAX_SEQUENCE = 10 ** 12
#: Largest password file read (password_file, XAPI_PASSWORD_FILE): a password, not a document.
MAX_PASSWORD_FILE_BYTES = 4096

_COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_GALAXY_VERSION_RE = re.compile(r"""^version:\s*["']?([0-9A-Za-z.+-]+)["']?\s*$""", re.MULTILINE)


def read_version(root=_COLLECTION_ROOT):
    """The collection version from ``galaxy.yml`` or ``MANIFEST.json`` under ``root`` (None if neither)."""
    try:
        with open(os.path.join(root, "galaxy.yml"), encoding="utf-8") as handle:
            found = _GALAXY_VERSION_RE.search(handle.read(65536))
        if found:
            return found.group(1)
    except OSError:
        pass
    try:
        with open(os.path.join(root, "MANIFEST.json"), encoding="utf-8") as handle:
            version = (json.loads(handle.read(1 << 20)).get("collection_info") or {}).get("version")
        if isinstance(version, str) and version:
            return version
    except (OSError, ValueError, AttributeError):
        pass
    return None


#: The collection version, written into every manifest (``tool_version``).
VERSION = read_version() or FALLBACK_VERSION
