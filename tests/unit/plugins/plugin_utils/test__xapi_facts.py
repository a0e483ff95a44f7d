# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


import pytest

from ansible_collections.xapi.backup.plugins.plugin_utils._catalogue import verify_targets
from ansible_collections.xapi.backup.plugins.plugin_utils._xapi_facts import helper_xapi_args

MASTER = "https://master.example:443"

# params, connection is local, expected helper arguments
TRANSFER_CASES = {
    "local_default": ({"transfer": "local"}, False, ["--url", "http://localhost"]),
    "local_custom_url": ({"transfer": "local", "helper_xapi_url": "http://127.0.0.1:8080"}, True, ["--url", "http://127.0.0.1:8080"]),
    "remote_system_store": ({"transfer": "remote", "validate_certs": True, "ca_path": "/ctl/ca.pem"}, False, ["--url", MASTER]),
    "remote_local_connection_uses_ca_path": ({"transfer": "remote", "validate_certs": True, "ca_path": "/ctl/ca.pem"}, True,
                                             ["--url", MASTER, "--ca-file", "/ctl/ca.pem"]),
    "remote_helper_ca_file_wins": ({"transfer": "remote", "validate_certs": True, "ca_path": "/ctl/ca.pem", "helper_ca_file": "/h/ca.pem"},
                                   False, ["--url", MASTER, "--ca-file", "/h/ca.pem"]),
    "remote_no_verification": ({"transfer": "remote", "validate_certs": False, "ca_path": "/ctl/ca.pem"}, True, ["--url", MASTER, "--insecure"]),
}


@pytest.mark.parametrize("params,local,expected", list(TRANSFER_CASES.values()), ids=list(TRANSFER_CASES))
def test_helper_xapi_args(params, local, expected):
    assert helper_xapi_args(params, MASTER, local) == expected


class B:
    def __init__(self, owner, stamp, complete=True, kind="vm"):
        self.owner, self.timestamp, self.complete, self.kind = owner, stamp, complete, kind
        self.pool_uuid = "p"
        self.time = stamp
        self.sequence = stamp
        self.status = "complete" if complete else "incomplete"
        self.future_dated = False

    @property
    def id(self):
        return "%s/%s" % (self.owner, self.timestamp)


@pytest.mark.parametrize("which,expected", [("none", []), ("latest", ["a/2", "b/1"]), ("all", ["a/1", "a/2", "b/1"])])
def test_verify_targets(which, expected):
    backups = [B("a", 1), B("a", 2), B("a", 3, complete=False), B("b", 1), B("pool", 1, kind="pool")]
    assert sorted(b.id for b in verify_targets(backups, which)) == expected


class _HostsXapi:
    def __init__(self, records):
        self.records = records
        self.calls = []

    def call(self, method, *args):
        self.calls.append(method)
        return self.records


def test_redirect_host_args_lists_every_pool_host_address_once():
    from ansible_collections.xapi.backup.plugins.plugin_utils._xapi_facts import redirect_host_args
    xapi = _HostsXapi({"OpaqueRef:m": {"address": "10.0.0.1"}, "OpaqueRef:s": {"address": "10.0.0.2"},
                       "OpaqueRef:d": {"address": "10.0.0.1"}, "OpaqueRef:x": {"address": ""}})
    assert redirect_host_args(xapi) == ["--allow-redirect-host", "10.0.0.1", "--allow-redirect-host", "10.0.0.2"]
    assert xapi.calls == ["host.get_all_records"]
    assert redirect_host_args(_HostsXapi(None)) == []
