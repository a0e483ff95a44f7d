# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""DR runbook 1 through a proxy that drops the Content-Length of the dump's upload: xapi answers
400 Bad Request (ocaml/xapi/pool_db_backup.ml push_database_restore_handler: no Content-Length,
no restore) and the dry run says so in plain words; nothing changed (the simulator's tables)."""

from __future__ import annotations

import json
import socket
import socketserver
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.test_dr_pool_db import _playbook, _reinstalled, _tables, lost_pool  # noqa: F401  pylint: disable=unused-import
from tests.integration.test_playbooks import HELPER

pytestmark = pytest.mark.slow

MAX_HEAD = 64 * 1024


def _read_head(rfile):
    lines = []
    size = 0
    while True:
        line = rfile.readline(MAX_HEAD)
        if not line:
            return None
        size += len(line)
        if line in (b"\r\n", b"\n") or size > MAX_HEAD:
            return lines
        lines.append(line)


def _length(lines):
    for line in lines[1:]:
        name, _sep, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            return int(value.strip())
    return None


class StripLengthProxy(socketserver.ThreadingTCPServer):
    """HTTP/1.1 pass-through to ``upstream``; a PUT to ``strip_path`` loses its Content-Length (and
    its body: without the length nothing frames it), as a misbehaving proxy would."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream, strip_path):
        self.upstream = upstream
        self.strip_path = strip_path
        self.stripped = 0
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(socketserver.StreamRequestHandler):
    def handle(self):
        up = socket.create_connection(self.server.upstream, timeout=30)
        up_rfile = up.makefile("rb")
        try:
            while True:
                head = _read_head(self.rfile)
                if not head:
                    return
                length = _length(head) or 0
                body = self.rfile.read(length) if length else b""
                method, target = head[0].split()[:2]
                if method == b"PUT" and target.startswith(self.server.strip_path.encode()):
                    head = [line for line in head if not line.lower().startswith(b"content-length:")]
                    body = b""
                    self.server.stripped += 1
                up.sendall(b"".join(head) + b"\r\n" + body)
                answer = _read_head(up_rfile)
                if not answer:
                    return
                answer_length = _length(answer)
                answer_body = up_rfile.read(answer_length) if answer_length else (b"" if answer_length == 0 else up_rfile.read())
                self.wfile.write(b"".join(answer) + b"\r\n" + answer_body)
                self.wfile.flush()
                if answer_length is None or any(line.lower().startswith(b"connection: close") for line in answer):
                    return
        finally:
            up_rfile.close()
            up.close()


def test_an_upload_without_content_length_is_refused_in_plain_words(lost_pool, tmp_path):  # noqa: F811
    sim, env, _unused = _reinstalled(lost_pool, "b-length")
    parsed = urlsplit(sim.info["url"])
    proxy = StripLengthProxy((parsed.hostname, parsed.port), "/pool/xmldbdump")
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        proxy_url = "http://127.0.0.1:%d" % proxy.server_address[1]
        host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "xapi_backup_hostname": sim.info["url"], "xapi_backup_repository": str(lost_pool["repo"]),
                "xapi_backup_helper_xapi_url": proxy_url, "xapi_backup_helper_path": str(HELPER)}
        inventory = Path(tmp_path) / "inv.json"
        inventory.write_text(json.dumps({"all": {"children": {"xapi_pools": {"hosts": {"b-length": host}}}}}))
        before = _tables(sim)
        out = _playbook(inventory, "xapi.backup.dr_pool_db_restore", "-e", "xapi_backup_dr_source_pool=%s" % lost_pool["pool_uuid"],
                        env=env, expect_rc=1)
        assert proxy.stripped == 1  # the dump's upload went through the proxy, without its length
        assert ("pool database restore (dry run) refused: xapi answered 400 Bad Request to the upload to /pool/xmldbdump: "
                "xapi needs the request's Content-Length") in out
        assert "HTTP_400_BAD_REQUEST" in out
        assert _tables(sim) == before
    finally:
        proxy.shutdown()
        proxy.server_close()
        sim.stop()
