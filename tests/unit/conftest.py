# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit-test support: the collection on sys.path, and a fake XenAPI backed by a tiny in-memory pool.

``fake_xenapi`` (autouse) puts a fake ``XenAPI`` module into ``sys.modules`` and into ``_xapi`` for the
duration of each test, so no test ever reaches a network. ``fake_pool`` is its in-memory pool: tests
add VMs and disks, inject failures (``fail``), and read the calls that reached the "server" (``log``).
"""

from __future__ import annotations

import copy
import datetime
import importlib.util
import itertools
import json
import sys
import types
import uuid as uuidlib
from pathlib import Path

import pytest

try:
    _FOUND = importlib.util.find_spec("ansible_collections.xapi.backup") is not None  # ansible-test units
except ImportError:
    _FOUND = False
if not _FOUND:  # plain pytest from the repository root: use the layout `make setup` builds
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".tmp" / "collections"))

from ansible_collections.xapi.backup.plugins.module_utils import _xapi  # noqa: E402

NULL = "OpaqueRef:NULL"
FIELDS_DEFAULTS = {
    "VM": dict(
        name_label="",
        name_description="",
        power_state="Halted",
        is_a_template=False,
        is_a_snapshot=False,
        is_control_domain=False,
        snapshot_of=NULL,
        snapshots=[],
        VBDs=[],
        VIFs=[],
        suspend_VDI=NULL,
        tags=[],
        other_config={},
        blocked_operations={},
        current_operations={},
        VCPUs_max="1",
        memory_static_max="1073741824",
        snapshot_time="19700101T00:00:00Z",
    ),
    "VBD": dict(VM=NULL, VDI=NULL, type="Disk", empty=False, userdevice="0", mode="RW", bootable=False),
    "VDI": dict(
        name_label="", SR=NULL, virtual_size="0", is_a_snapshot=False, snapshot_of=NULL, VBDs=[], other_config={}
    ),
    "SR": dict(name_label="", type="ext", content_type="user", shared=False, physical_size="0", physical_utilisation="0"),
    "VIF": dict(VM=NULL, network=NULL, device="0", MAC="", MTU="1500"),
    "network": dict(name_label="", bridge=""),
    "pool": dict(name_label="", master=NULL, default_SR=NULL),
    "host": dict(name_label="", address="127.0.0.1"),
    "task": dict(status="pending", result="", error_info=[]),
}


class FakeFailure(Exception):
    def __init__(self, details):
        super().__init__(details)
        self.details = details


class FakePool:
    """A pool in memory that answers XenAPI calls the way xapi does (the subset the collection uses)."""

    def __init__(self):
        self.objects = dict((cls, {}) for cls in FIELDS_DEFAULTS)
        self.log = []  # (method, args) of every call that reached the server, login/logout included
        self.fail = {}  # method -> ErrorDescription list: that call fails (every time)
        self.password = "secret-pw"
        self.slave_master = None  # address HOST_IS_SLAVE names, for logins on a url other than master_url
        self.master_url = None
        self.urls = []  # url of every Session created
        self.task_status = "success"  # status Async tasks end in ("pending" keeps them running)
        self.sessions = 0
        self.clock = datetime.datetime(2026, 11, 21, 23, 59, 1, tzinfo=datetime.timezone.utc)  # the pool's clock
        self._counter = itertools.count(1)
        pool_master = self.add("host", name_label="master")
        self.add("pool", name_label="pool", master=pool_master)

    # ---------------------------------------------------------------- building the pool
    def add(self, cls, **fields):
        ref = "OpaqueRef:%s-%d" % (cls, next(self._counter))
        record = copy.deepcopy(FIELDS_DEFAULTS[cls])
        record["uuid"] = str(uuidlib.uuid4())
        record.update(fields)
        self.objects[cls][ref] = record
        return ref

    def add_vm(self, name, disks=1, cd=False, vifs=0, sr=None, **fields):
        """A VM with ``disks`` disks (1 MiB each) in ``sr`` (created if needed), an optional CD, VIFs."""
        sr = sr or self.sr()
        vm = self.add("VM", name_label=name, **fields)
        for i in range(disks):
            vdi = self.add("VDI", name_label="%s disk %d" % (name, i), SR=sr, virtual_size=str(1 << 20))
            self.plug(vm, vdi, userdevice=str(i))
        if cd:
            self.plug(vm, NULL, type="CD", empty=True, userdevice="3")
        for i in range(vifs):
            net = self.network()
            vif = self.add("VIF", VM=vm, network=net, device=str(i), MAC="aa:bb:cc:00:00:%02x" % i)
            self.objects["VM"][vm]["VIFs"].append(vif)
        return vm

    def plug(self, vm, vdi, **fields):
        vbd = self.add("VBD", VM=vm, VDI=vdi, **fields)
        self.objects["VM"][vm]["VBDs"].append(vbd)
        if vdi != NULL:
            self.objects["VDI"][vdi]["VBDs"].append(vbd)
        return vbd

    def sr(self):
        existing = list(self.objects["SR"])
        return existing[0] if existing else self.add("SR", name_label="Local storage")

    def network(self):
        existing = list(self.objects["network"])
        return existing[0] if existing else self.add("network", name_label="net0", bridge="xenbr0")

    def vm(self, ref):
        return self.objects["VM"][ref]

    def methods(self):
        return [m for m, _a in self.log]

    def mutating(self):
        """Calls that changed something (anything but get*/login/logout/task reads)."""
        readonly = ("get_", "login", "logout", "task.get_")
        return [m for m in self.methods() if not any(m.split(".")[-1].startswith(r) or m.startswith(r) for r in readonly)]

    # ---------------------------------------------------------------- answering
    def _record(self, cls, ref):
        try:
            return self.objects[cls][ref]
        except KeyError:
            raise FakeFailure(["HANDLE_INVALID", cls, ref]) from None

    def handle(self, method, args):
        self.log.append((method, args))
        if method in self.fail:
            raise FakeFailure(list(self.fail[method]))
        if method.startswith("Async."):
            return self._async(method[len("Async."):], args)
        cls, _dot, op = method.partition(".")
        special = getattr(self, "_op_%s_%s" % (cls, op), None)
        if special is not None:
            return special(*args)
        return self._generic(cls, op, args)

    def _generic(self, cls, op, args):
        if op == "get_all_records":
            return copy.deepcopy(self.objects[cls])
        if op == "get_record":
            return copy.deepcopy(self._record(cls, args[0]))
        if op == "get_by_uuid":
            for ref, record in self.objects[cls].items():
                if record["uuid"] == args[0]:
                    return ref
            raise FakeFailure(["UUID_INVALID", cls, args[0]])
        if op == "get_by_name_label":
            return [r for r, rec in self.objects[cls].items() if rec["name_label"] == args[0]]
        if op.startswith("get_"):
            return copy.deepcopy(self._record(cls, args[0])[op[4:]])
        if op.startswith("set_"):
            self._record(cls, args[0])[op[4:]] = copy.deepcopy(args[1])
            return ""
        if op.startswith("add_to_"):
            field = self._record(cls, args[0])[op[7:]]
            if args[1] in field:
                raise FakeFailure(["MAP_DUPLICATE_KEY", cls, op[7:], args[0], args[1]])
            field[args[1]] = args[2]
            return ""
        if op.startswith("remove_from_"):
            self._record(cls, args[0])[op[12:]].pop(args[1], None)
            return ""
        if op == "destroy":
            self._record(cls, args[0])
            del self.objects[cls][args[0]]
            return ""
        raise FakeFailure(["MESSAGE_METHOD_UNKNOWN", "%s.%s" % (cls, op)])

    def _op_session_login_with_password(self, username, password, _version="", _originator=""):
        if self.slave_master and self.urls[-1] != self.master_url:
            raise FakeFailure(["HOST_IS_SLAVE", self.slave_master])
        if username != "root" or password != self.password:
            raise FakeFailure(["SESSION_AUTHENTICATION_FAILED"])
        self.sessions += 1
        return "OpaqueRef:session-%d" % self.sessions

    def _op_session_logout(self):
        return ""

    def servertime(self):
        return self.clock.strftime("%Y%m%dT%H:%M:%SZ")

    def _op_host_get_servertime(self, ref):
        self._record("host", ref)
        return self.servertime()

    def _op_VM_destroy(self, ref):
        record = self._record("VM", ref)
        if "destroy" in record.get("blocked_operations", {}):
            raise FakeFailure(["OPERATION_BLOCKED", ref, record["blocked_operations"]["destroy"]])
        for vbd in record["VBDs"]:
            vdi = self.objects["VBD"].pop(vbd)["VDI"]
            if vdi in self.objects["VDI"]:
                self.objects["VDI"][vdi]["VBDs"].remove(vbd)
        if record["snapshot_of"] in self.objects["VM"]:
            self.objects["VM"][record["snapshot_of"]]["snapshots"].remove(ref)
        del self.objects["VM"][ref]
        return ""

    def _op_VDI_destroy(self, ref):
        record = self._record("VDI", ref)
        if record["VBDs"]:
            raise FakeFailure(["VDI_IN_USE", ref, "destroy"])
        del self.objects["VDI"][ref]
        return ""

    def _op_task_cancel(self, ref):
        self._record("task", ref)["status"] = "cancelled"
        return ""

    def snapshot(self, vm, name):
        source = self._record("VM", vm)
        snap = self.add(
            "VM",
            name_label=name,
            is_a_snapshot=True,
            is_a_template=True,
            snapshot_of=vm,
            power_state="Halted",
            other_config=copy.deepcopy(source["other_config"]),
            tags=list(source["tags"]),
            blocked_operations={},  # xapi_vm_clone.ml copy_vm_record: a new snapshot blocks nothing
            snapshot_time=self.servertime(),
        )
        source["snapshots"].append(snap)
        for vbd in source["VBDs"]:
            old = self.objects["VBD"][vbd]
            vdi = old["VDI"]
            if old["type"] != "CD" and vdi != NULL:
                src_vdi = self.objects["VDI"][vdi]
                vdi = self.add(
                    "VDI",
                    name_label=src_vdi["name_label"],
                    SR=src_vdi["SR"],
                    virtual_size=src_vdi["virtual_size"],
                    is_a_snapshot=True,
                    snapshot_of=old["VDI"],
                    other_config=copy.deepcopy(src_vdi["other_config"]),
                )
            self.plug(snap, vdi, type=old["type"], empty=old["empty"], userdevice=old["userdevice"])
        return snap

    def _async(self, method, args):
        if method != "VM.snapshot":
            raise FakeFailure(["MESSAGE_METHOD_UNKNOWN", "Async." + method])
        if self.task_status == "success":
            result = "<value>%s</value>" % self.snapshot(*args)
            return self.add("task", status="success", result=result)
        if self.task_status == "failure":
            return self.add("task", status="failure", error_info=["SR_FULL", "10", "5"])
        return self.add("task", status=self.task_status)

    def snapshots_of(self, vm):
        return [r for r, rec in self.objects["VM"].items() if rec["is_a_snapshot"] and rec["snapshot_of"] == vm]


def make_fake_xenapi(pool):
    """A module object standing in for ``XenAPI``: ``Session`` and ``Failure`` bound to ``pool``."""

    class _Dispatcher:
        def __init__(self, session, name=None):
            self._s, self._name = session, name

        def __getattr__(self, name):
            return _Dispatcher(self._s, name if self._name is None else self._name + "." + name)

        def __call__(self, *args):
            name = self._name
            if name.startswith("login"):
                self._s._session = pool.handle("session." + name, args)
                return None
            if name in ("logout", "session.logout"):
                pool.handle("session.logout", ())
                self._s._session = None
                return None
            if self._s._session is None:
                raise FakeFailure(["SESSION_INVALID", "OpaqueRef:NULL"])
            return pool.handle(name, args)

    class Session:
        def __init__(self, uri, transport=None, **_kwargs):
            pool.urls.append(uri)
            self.transport = transport
            self._session = None

        @property
        def xenapi(self):
            return _Dispatcher(self)

    module = types.ModuleType("XenAPI")
    module.Failure = FakeFailure
    module.Session = Session
    return module


@pytest.fixture
def fake_pool():
    return FakePool()


@pytest.fixture(autouse=True)
def fake_xenapi(monkeypatch, fake_pool):
    module = make_fake_xenapi(fake_pool)
    monkeypatch.setitem(sys.modules, "XenAPI", module)
    monkeypatch.setattr(_xapi, "XenAPI", module)
    monkeypatch.setattr(_xapi, "HAS_XENAPI", True)
    return module


@pytest.fixture
def xapi(fake_pool):
    """A logged-in ``XapiSession`` on ``fake_pool`` (no sleeping: the clock jumps instead)."""
    conn = _xapi.XapiConnection("https://pool.test", "root", fake_pool.password)
    with conn.session() as session:
        fake_pool.log.clear()
        _fast_clock(session)
        yield session


def _fast_clock(session):
    now = [0.0]
    session.clock = lambda: now[0]

    def sleep(seconds):
        now[0] += max(seconds, 0.001)

    session.sleep = sleep


@pytest.fixture
def run_module(capsys, monkeypatch):
    """Run a module's ``main()`` with ``args``; return ``(failed, result_dict)``."""
    from ansible.module_utils.testing import patch_module_args

    def run(module_main, args):
        base = {"hostname": "https://pool.test", "password": "secret-pw"}
        base.update(args)
        base = dict((k, v) for k, v in base.items() if v is not None)  # None = "not given"
        with patch_module_args(base):
            with pytest.raises(SystemExit) as exc:
                module_main()
        out = json.loads(capsys.readouterr().out)
        return bool(exc.value.code) or bool(out.get("failed")), out

    return run
