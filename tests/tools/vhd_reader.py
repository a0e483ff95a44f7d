# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""An independent reader for the VHDs the helper stores: Debian's qemu-img, never the code under test
(the helper only undoes its own compression first)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request

QEMU_IMG = shutil.which("qemu-img")
BLOCK = 2 * 1024 * 1024
HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "roles", "helper", "files",
                      "xapi-backup-helper")


def expand_runs(runs) -> set:
    """Block numbers of a manifest's ``[[first, count], ...]`` runs."""
    return {first + i for first, count in runs for i in range(count)}


def decompressed(stored, tmp_path, python=sys.executable) -> str:
    """Path of the raw VHD inside a stored (compressed) disk file, written below ``tmp_path``."""
    raw_vhd = os.path.join(str(tmp_path), os.path.basename(str(stored)) + ".vhd")
    with open(str(stored), "rb") as src, open(raw_vhd, "wb") as dst:
        subprocess.run([python, HELPER, "decompress"], stdin=src, stdout=dst, stderr=subprocess.DEVNULL, check=True)
    return raw_vhd


def _image_opts(vhd_path) -> str:
    # force_size_calc=current_size: qemu would otherwise size the disk from the CHS geometry
    return "driver=vpc,force_size_calc=current_size,file.driver=file,file.filename=%s" % vhd_path


def qemu_blocks(vhd_path) -> set:
    """The 2 MiB blocks qemu-img finds allocated (data) in a raw VHD."""
    extents = json.loads(subprocess.run([QEMU_IMG, "map", "--output=json", "--image-opts", _image_opts(vhd_path)],
                                        check=True, stdout=subprocess.PIPE).stdout)
    blocks = set()
    for extent in extents:
        if extent["data"]:
            blocks.update(range(extent["start"] // BLOCK, (extent["start"] + extent["length"] - 1) // BLOCK + 1))
    return blocks


def qemu_blocks_and_content(vhd_path):
    """(allocated blocks, the disk's bytes as qemu-img converts them to raw) of a raw VHD."""
    raw = str(vhd_path) + ".raw"
    subprocess.run([QEMU_IMG, "convert", "-O", "raw", "--image-opts", _image_opts(vhd_path), raw], check=True)
    with open(raw, "rb") as handle:
        return qemu_blocks(vhd_path), handle.read()


def export_raw_sha256(sim, session, vdi_uuid, timeout=600) -> str:
    """sha256 of a VDI's bytes as the pool serves them (``GET /export_raw_vdi?format=raw``)."""
    query = urllib.parse.urlencode({"session_id": session._session, "vdi": vdi_uuid, "format": "raw"})
    digest = hashlib.sha256()
    with urllib.request.urlopen("%s/export_raw_vdi?%s" % (sim.url, query), timeout=timeout) as resp:
        while True:
            data = resp.read(8 << 20)
            if not data:
                break
            digest.update(data)
    return digest.hexdigest()
