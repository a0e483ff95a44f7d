"""Every accessor of the classes a backup/restore/DR touches, enumerated from the datamodel
copy (datamodel.json), answers like xapi: getters with the field's wire type, RW setters round
trip and refuse a wrong type (FIELD_TYPE_ERROR [field]), read-only fields have no setter
(MESSAGE_METHOD_UNKNOWN), removed fields answer MESSAGE_REMOVED, maps and sets have their
add/remove calls.  Once over XML-RPC with the real XenAPI client, once over JSON-RPC (xapi's
/jsonrpc, spoken with a minimal keep-alive client: the XenAPI package has no JSON-RPC); one
simulator for the module."""

import datetime
import http.client
import json
import os
import time
import urllib.parse
import xmlrpc.client

import pytest
import XenAPI

from tests.xapisim import coverage
from tests.xapisim.fixture import start_simulator
from tests.xapisim.schema import DATAMODEL

CLASSES = ["pool", "host", "VM", "VM_metrics", "VM_guest_metrics", "VM_appliance", "VBD", "VDI",
           "SR", "PBD", "VIF", "network", "PIF", "task", "session", "message", "blob", "event"]
NULL = "OpaqueRef:NULL"


class Failure(Exception):
    def __init__(self, details):
        super().__init__(details)
        self.details = details


class XmlRpcClient:
    """The real XenAPI client; errors as Failure(details)."""
    json = False

    def __init__(self, sim):
        self.session = XenAPI.Session(sim.url)
        self.session.login_with_password(sim.username, sim.password, "2.0", "surface-test")
        self.ref = self.session._session

    def call(self, method, *args):
        target = self.session.xenapi
        for part in method.split("."):
            target = getattr(target, part)
        try:
            return target(*args)
        except XenAPI.Failure as exc:
            raise Failure(exc.details) from None

    def close(self):
        self.session.xenapi.session.logout()


class JsonRpcClient:
    """JSON-RPC 2.0 on POST /jsonrpc over one keep-alive connection."""
    json = True

    def __init__(self, sim):
        parts = urllib.parse.urlsplit(sim.url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.next_id = 0
        self.ref = self.raw("session.login_with_password",
                            [sim.username, sim.password, "2.0", "surface-test"])

    def raw(self, method, params):
        self.next_id += 1
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params,
                           "id": self.next_id})
        self.conn.request("POST", "/jsonrpc", body=body,
                          headers={"Content-Type": "application/json"})
        reply = json.loads(self.conn.getresponse().read())
        if "error" in reply:
            raise Failure([reply["error"]["message"]] + list(reply["error"].get("data") or []))
        return reply["result"]

    def call(self, method, *args):
        return self.raw(method, [self.ref] + list(args))

    def close(self):
        self.raw("session.logout", [self.ref])
        self.conn.close()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    state = tmp_path_factory.mktemp("xapisim-surface")
    simulator = start_simulator("tiny", str(state),
                                options={"guest_metrics_delay_seconds": "0.05"})
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def objects(sim):
    """One object of each class (created where the tiny pool has none)."""
    client = XmlRpcClient(sim)
    c = client.call
    vm = c("VM.get_by_name_label", "tiny-halted")[0]
    running = c("VM.get_by_name_label", "tiny-running")[0]
    deadline = time.monotonic() + 10
    while c("VM.get_guest_metrics", running) == NULL and time.monotonic() < deadline:
        time.sleep(0.05)
    vbd = c("VM.get_VBDs", vm)[0]
    sr = c("SR.get_by_name_label", "nfs")[0]
    found = {
        "pool": c("pool.get_all")[0], "host": c("host.get_all")[0], "VM": vm,
        "VM_metrics": c("VM.get_metrics", vm), "VM_guest_metrics": c("VM.get_guest_metrics",
                                                                     running),
        "VM_appliance": c("VM_appliance.create", {"name_label": "app",
                                                  "name_description": "surface"}),
        "VBD": vbd, "VDI": c("VBD.get_VDI", vbd), "SR": sr, "PBD": c("SR.get_PBDs", sr)[0],
        "VIF": c("VM.get_VIFs", vm)[0], "network": c("VIF.get_network", c("VM.get_VIFs", vm)[0]),
        "PIF": c("PIF.get_all")[0], "task": c("task.create", "surface", "test"),
        "message": c("message.create", "SURFACE", "1", "VM", c("VM.get_uuid", vm), "body"),
        "blob": c("blob.create", "text/plain", False)}
    assert found["VM_guest_metrics"] != NULL
    client.close()
    return found


def api_fields(cls):
    return [f for f in DATAMODEL["classes"][cls]["fields"] if not f["internal_only"]]


def check_type(ty, value, as_json):
    """Does a wire value have the datamodel type (XML-RPC: int64 as strings, DateTime;
    JSON-RPC: numbers, datetime strings)?"""
    if ty.startswith("set:"):
        return isinstance(value, list) and all(check_type(ty[4:], v, as_json) for v in value)
    if ty.startswith("map:"):
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if ty == "int":
        return isinstance(value, int) and not isinstance(value, bool) if as_json else \
            isinstance(value, str) and value.lstrip("-").isdigit()
    if ty == "float":
        return isinstance(value, (float, int)) and not isinstance(value, bool)
    if ty == "bool":
        return isinstance(value, bool)
    if ty == "datetime":
        text = value if as_json else getattr(value, "value", None)
        return isinstance(text, str) and bool(
            datetime.datetime.strptime(text.rstrip("Z"), "%Y%m%dT%H:%M:%S"))
    if ty.startswith("ref:"):
        return isinstance(value, str) and value.startswith("OpaqueRef:")
    if ty.startswith("enum:"):
        values = DATAMODEL["enums"].get(ty[5:])
        return isinstance(value, str) and (not values or value in values)
    return isinstance(value, str)


def wrong_value(ty):
    if ty.startswith("set:"):
        return "not a set"
    if ty.startswith("map:"):
        return "not a map"
    return {"string": 12345, "int": "many", "float": "much", "bool": "maybe",
            "datetime": 7}.get(ty, 12345)


def sample_element(ty):
    if ty.startswith("enum:"):
        return DATAMODEL["enums"][ty[5:]][0]
    return "xapisim-surface"


def expect_failure(client, method, *args):
    with pytest.raises(Failure) as err:
        client.call(method, *args)
    return err.value.details


@pytest.fixture(scope="module", params=["xmlrpc", "jsonrpc"])
def client(request, sim):
    c = (XmlRpcClient if request.param == "xmlrpc" else JsonRpcClient)(sim)
    yield c
    c.close()


def test_datamodel_copy_covers_the_listed_classes():
    assert set(CLASSES) <= set(DATAMODEL["classes"])
    assert DATAMODEL["source"]["repository"] == "xapi-project/xen-api"
    vm = {f["name"]: f for f in DATAMODEL["classes"]["VM"]["fields"]}
    # spot checks against ocaml/idl/datamodel_vm.ml
    assert vm["power_state"]["qualifier"] == "StaticRO" and vm["power_state"]["default"] == \
        "Halted"
    assert vm["name_label"]["qualifier"] == "RW" and vm["name_label"]["published"] == "rio"
    assert vm["order"]["published"] == "boston" and vm["order"]["default"] == 0
    assert vm["VCPUs_max"]["type"] == "int" and vm["VCPUs_max"]["qualifier_doc"] == \
        "RO_constructor"
    assert vm["VBDs"]["qualifier_doc"] == "RO_runtime"
    assert "memory_static_max" in DATAMODEL["classes"]["VM"]["constructor"]
    assert DATAMODEL["classes"]["PBD"]["constructor"] == ["host", "SR", "device_config",
                                                          "other_config"]
    assert DATAMODEL["enums"]["vm_power_state"] == ["Halted", "Paused", "Running", "Suspended"]
    for cls in CLASSES:
        assert DATAMODEL["classes"][cls]["unparsed"] == [], cls


def test_every_accessor_answers_like_xapi(client, objects):
    as_json = client.json
    checked = setters = refused = 0
    for cls in CLASSES:
        spec = DATAMODEL["classes"][cls]
        if cls == "event":
            continue  # no table: event.from / inject are tested in test_events*
        ref = client.ref if cls == "session" else objects[cls]
        messages = set(spec["messages"])
        record = client.call(cls + ".get_record", ref)
        if not spec["in_db"]:
            # message: only its explicit calls, no field accessors (datamodel_utils.ml)
            assert client.call(cls + ".get_by_uuid", record["uuid"]) == ref
            assert expect_failure(client, cls + ".get_name", ref) == \
                ["MESSAGE_METHOD_UNKNOWN", cls + ".get_name"]
            continue
        assert set(record) == {f["name"] for f in api_fields(cls)}, cls
        assert client.call(cls + ".get_by_uuid", record["uuid"]) == ref
        if cls != "session":
            assert ref in client.call(cls + ".get_all")
            where = 'field "uuid" = "%s"' % record["uuid"]
            assert client.call(cls + ".get_all_where", where) == [ref]
            assert list(client.call(cls + ".get_all_records_where", where)) == [ref]
        else:  # session is not in expose_get_all_messages_for; its get_all is database-only
            assert expect_failure(client, "session.get_all") == \
                ["MESSAGE_METHOD_UNKNOWN", "session.get_all"]
        if "name_label" in record:
            assert ref in client.call(cls + ".get_by_name_label", record["name_label"])
        for field in api_fields(cls):
            name, ty = field["name"], field["type"]
            if field["removed"]:
                assert expect_failure(client, "%s.get_%s" % (cls, name), ref) == \
                    ["MESSAGE_REMOVED"], (cls, name)
                continue
            value = client.call("%s.get_%s" % (cls, name), ref)
            assert check_type(ty, value, as_json), (cls, name, ty, value)
            checked += 1
            setter = "%s.set_%s" % (cls, name)
            if field["qualifier"] != "RW":
                if "set_" + name not in messages or coverage.status(cls, "set_" + name) == \
                        "absent":
                    assert expect_failure(client, setter, ref, value) == \
                        ["MESSAGE_METHOD_UNKNOWN", setter], (cls, name)
                    refused += 1
                continue
            assert client.call(setter, ref, value) == ""
            setters += 1
            assert client.call("%s.get_%s" % (cls, name), ref) == value
            if ty.startswith("enum:"):
                assert expect_failure(client, setter, ref, "no-such-value") == \
                    ["INVALID_VALUE", name, "no-such-value"]
            elif ty.startswith("ref:"):
                assert expect_failure(client, setter, ref, 5) == ["FIELD_TYPE_ERROR", name]
            else:
                assert expect_failure(client, setter, ref, wrong_value(ty)) == \
                    ["FIELD_TYPE_ERROR", name], (cls, name)
            if ty.startswith("map:"):
                adder, remover = "%s.add_to_%s" % (cls, name), "%s.remove_from_%s" % (cls, name)
                client.call(adder, ref, "xapisim-k", sample_element(ty.split(":", 2)[2]))
                assert "xapisim-k" in client.call("%s.get_%s" % (cls, name), ref)
                assert expect_failure(client, adder, ref, "xapisim-k", "again")[0] == \
                    "MAP_DUPLICATE_KEY"
                client.call(remover, ref, "xapisim-k")
                assert client.call("%s.get_%s" % (cls, name), ref) == value
            elif ty.startswith("set:") and not ty.startswith("set:ref:"):
                element = sample_element(ty[4:])
                client.call("%s.add_%s" % (cls, name), ref, element)
                assert element in client.call("%s.get_%s" % (cls, name), ref)
                client.call("%s.remove_%s" % (cls, name), ref, element)
                assert client.call("%s.get_%s" % (cls, name), ref) == value
    assert checked > 450 and setters == 88 and refused > 250


def test_unknown_and_refused_calls_never_crash(client, objects):
    vm = objects["VM"]
    for method in ("VM.set_power_state", "VM.set_uuid", "VM.add_to_VBDs", "VM.add_VBDs",
                   "VM.frobnicate", "VDI.set_SR", "VM.set_domid", "VM.get_no_such_field",
                   "VM.migrate_send", "nosuchclass.get_all", "message.set_name"):
        assert expect_failure(client, method, vm, "x") == ["MESSAGE_METHOD_UNKNOWN", method]
    # right method, wrong parameter count
    assert expect_failure(client, "VM.get_name_label")[0] == "MESSAGE_PARAMETER_COUNT_MISMATCH"
    # a handle of another class
    assert expect_failure(client, "VM.get_name_label", objects["VDI"]) == \
        ["HANDLE_INVALID", "VM", objects["VDI"]]


def test_generic_constructor_takes_the_constructor_fields_with_defaults(client, objects):
    created = client.call("VM_appliance.create", {"name_label": "only a name"})
    record = client.call("VM_appliance.get_record", created)
    assert record["name_description"] == "" and record["VMs"] == []
    vm = objects["VM"]
    client.call("VM.set_appliance", vm, created)
    assert client.call("VM_appliance.get_VMs", created) == [vm]
    client.call("VM_appliance.destroy", created)
    assert client.call("VM.get_appliance", vm) == NULL
    assert expect_failure(client, "VM_appliance.create", "not a record")[0] == "INTERNAL_ERROR"
    assert expect_failure(client, "VM_appliance.create", {"name_label": 5}) == \
        ["FIELD_TYPE_ERROR", "name_label"]


def test_list_methods_names_the_generated_surface(sim):
    methods = set(xmlrpc.client.ServerProxy(sim.url).system.listMethods())
    assert {"VM.get_order", "VM.set_order", "VM.add_to_other_config", "PBD.create",
            "VM_appliance.create", "VM_guest_metrics.get_networks", "PIF.get_device",
            "VM.set_VCPUs_max", "SR.introduce"} <= methods
    assert "VM.set_power_state" not in methods and "message.get_name" not in methods
    assert os.path.exists(coverage.README)


def test_readme_coverage_table_is_current():
    """The README table is generated (python -m tests.xapisim.coverage --update-readme)."""
    with open(coverage.README, encoding="utf-8") as f:
        readme = f.read()
    assert coverage.markdown_table() in readme
    counts = coverage.class_coverage("VM")
    assert {"set_VCPUs_max", "provision", "clone", "copy", "set_order",
            "set_start_delay"} <= set(counts["implemented"])
    assert "add_to_other_config" in counts["partial"] and "migrate_send" in counts["absent"]
