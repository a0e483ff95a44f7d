# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Out-of-band views for tests that assert "nothing changed": read the file system directly, never
through the code under test."""

from __future__ import annotations

import os
import stat


def tree(root) -> dict:
    """{relative path: (kind, detail)} of everything below ``root``, links not followed: ``("link", target)``,
    ``("dir", mode)``, ``("file", bytes)``."""
    out = {}
    for base, dirs, files in os.walk(str(root)):
        for name in dirs + files:
            full = os.path.join(base, name)
            rel = os.path.relpath(full, str(root))
            if os.path.islink(full):
                out[rel] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                out[rel] = ("dir", stat.S_IMODE(os.stat(full).st_mode))
            else:
                with open(full, "rb") as handle:
                    out[rel] = ("file", handle.read())
    return out
