"""The generic per-class calls and get_all_records_where's filter language."""

import pytest
import XenAPI

from tests.xapisim import filter as xfilter


@pytest.fixture(scope="module")
def x(xapisim_tiny):
    session = xapisim_tiny.session()
    yield session.xenapi
    session.xenapi.session.logout()


def vm_named(x, name):
    refs = x.VM.get_by_name_label(name)
    assert len(refs) == 1
    return refs[0]


def test_get_all_and_records_agree(x):
    refs = x.VM.get_all()
    records = x.VM.get_all_records()
    assert sorted(refs) == sorted(records)
    names = {r["name_label"] for r in records.values()}
    assert {"tiny-running", "tiny-halted", "Other install media",
            "Control domain on host: tiny-master", "Control domain on host: tiny-member"} <= names


def test_record_has_xapi_fields_and_relations(x):
    vm = vm_named(x, "tiny-halted")
    record = x.VM.get_record(vm)
    for field in ("uuid", "power_state", "is_a_template", "is_a_snapshot", "snapshot_of",
                  "snapshots", "snapshot_time", "VBDs", "VIFs", "other_config", "tags",
                  "blocked_operations", "current_operations", "allowed_operations",
                  "is_control_domain", "resident_on", "suspend_VDI", "memory_static_max",
                  "domain_type", "HVM_boot_policy", "platform", "parent", "children"):
        assert field in record, field
    assert record["other_config"]["purpose"] == "test"
    assert "mac_seed" in record["other_config"]
    assert len(record["VBDs"]) == 2
    for vbd in record["VBDs"]:
        vbd_record = x.VBD.get_record(vbd)
        assert vbd_record["VM"] == vm
        vdi = x.VDI.get_record(vbd_record["VDI"])
        assert vbd in vdi["VBDs"]
        assert vdi["SR"] in x.SR.get_all()
    vif = x.VIF.get_record(record["VIFs"][0])
    assert vif["MAC"] == "02:00:00:00:00:01" and vif["VM"] == vm
    assert record["VIFs"][0] in x.network.get_record(vif["network"])["VIFs"]


def test_get_by_uuid_and_invalid_handles(x):
    vm = vm_named(x, "tiny-halted")
    uuid = x.VM.get_uuid(vm)
    assert x.VM.get_by_uuid(uuid) == vm
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.get_by_uuid("00000000-0000-0000-0000-000000000000")
    assert err.value.details == ["UUID_INVALID", "VM", "00000000-0000-0000-0000-000000000000"]
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.get_record("OpaqueRef:00000000-dead-beef-0000-000000000000")
    assert err.value.details == ["HANDLE_INVALID", "VM",
                                 "OpaqueRef:00000000-dead-beef-0000-000000000000"]
    with pytest.raises(XenAPI.Failure) as err:
        x.VDI.get_virtual_size(vm)  # a VM ref is not a VDI
    assert err.value.details == ["HANDLE_INVALID", "VDI", vm]


def test_field_getters(x):
    vm = vm_named(x, "tiny-running")
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_name_label(vm) == "tiny-running"
    assert x.VM.get_tags(vm) == ["tiny"]
    host = x.VM.get_resident_on(vm)
    assert x.host.get_name_label(host) == "tiny-master"
    assert x.host.get_address(host) == "127.0.0.1"
    pool = x.pool.get_all()[0]
    assert x.pool.get_master(pool) == host
    sr = x.pool.get_default_SR(pool)
    assert x.SR.get_name_label(sr) == "nfs"
    assert x.SR.get_type(sr) == "nfs" and x.SR.get_shared(sr) is True
    assert x.SR.get_content_type(sr) == "user"
    assert int(x.SR.get_physical_size(sr)) == 1024 ** 3
    assert 0 < int(x.SR.get_physical_utilisation(sr)) < 64 * 1024 ** 2
    assert len(x.SR.get_PBDs(sr)) == 2
    assert x.host.get_enabled(host) is True


def test_setters_maps_and_sets(x):
    vm = vm_named(x, "tiny-halted")
    x.VM.set_name_description(vm, "described")
    assert x.VM.get_name_description(vm) == "described"
    x.VM.add_to_other_config(vm, "xapi_backup:owner", "xapi.backup")
    assert x.VM.get_other_config(vm)["xapi_backup:owner"] == "xapi.backup"
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.add_to_other_config(vm, "xapi_backup:owner", "again")
    assert err.value.details == ["MAP_DUPLICATE_KEY", "VM", "other_config", vm,
                                 "xapi_backup:owner"]
    x.VM.remove_from_other_config(vm, "xapi_backup:owner")
    x.VM.remove_from_other_config(vm, "never-there")  # no error, as in xapi
    assert "xapi_backup:owner" not in x.VM.get_other_config(vm)
    x.VM.add_tags(vm, "backup")
    x.VM.add_tags(vm, "backup")
    assert x.VM.get_tags(vm).count("backup") == 1
    x.VM.remove_tags(vm, "backup")
    assert "backup" not in x.VM.get_tags(vm)
    x.VM.set_tags(vm, ["a", "b"])
    assert x.VM.get_tags(vm) == ["a", "b"]
    x.VM.add_to_blocked_operations(vm, "export", "no")
    x.VM.remove_from_blocked_operations(vm, "export")
    x.VM.add_to_xenstore_data(vm, "vm-data/k", "v")
    assert x.VM.get_xenstore_data(vm) == {"vm-data/k": "v"}
    vdi = x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    x.VDI.add_to_sm_config(vdi, "k", "v")
    assert x.VDI.get_sm_config(vdi)["k"] == "v"
    x.VDI.set_name_label(vdi, "renamed disk")
    assert x.VDI.get_name_label(vdi) == "renamed disk"
    pool = x.pool.get_all()[0]
    x.pool.add_to_other_config(pool, "barrier", "1")
    x.pool.remove_from_other_config(pool, "barrier")
    x.pool.set_name_label(pool, "renamed pool")
    assert x.pool.get_name_label(pool) == "renamed pool"


def test_read_only_fields_have_no_setter(x):
    vm = vm_named(x, "tiny-halted")
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.set_power_state(vm, "Running")
    assert err.value.details == ["MESSAGE_METHOD_UNKNOWN", "VM.set_power_state"]
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.set_uuid(vm, "x")
    assert err.value.details[0] == "MESSAGE_METHOD_UNKNOWN"


def test_get_all_records_where(x):
    candidates = x.VM.get_all_records_where(
        'field "is_a_template"="false" and field "is_control_domain"="false" and '
        'field "is_a_snapshot"="false"')
    assert {r["name_label"] for r in candidates.values()} == \
        {"tiny-running", "tiny-halted", "tiny-on-lvm"}
    running = x.VM.get_all_records_where('field "power_state" = "Running"')
    assert {r["name_label"] for r in running.values()} >= {"tiny-running"}
    assert all(r["power_state"] == "Running" for r in running.values())
    assert x.VM.get_all_records_where("false") == {}
    assert len(x.VM.get_all_records_where("true")) == len(x.VM.get_all())
    assert len(x.SR.get_all_records_where('field "type"="lvm"')) == 1
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.get_all_records_where('field "power_state" = ')
    assert err.value.details[0] == "INTERNAL_ERROR"


@pytest.mark.parametrize("expr,expected", [
    ('field "a"="1"', True),
    ('"1"=field "a"', True),
    ('field "a"="2"', False),
    ('field "a"=field "b"', False),
    ('not field "a"="2"', True),
    ('(field "a"="1")', True),
    # and/or share one precedence level, left to right: (true or x) and false = false
    ('true or field "a"="1" and false', False),
    # not takes everything to its right: not (true and false) = true
    ('not true and false', True),
    ('not (true) and false', True),
    ('(not true) and false', False),
    ('field "flag"="true" and field "n"="42"', True),
    ('field "tags"="(\'x\' \'y\')"', True),
])
def test_filter_semantics(expr, expected):
    record = {"a": "1", "b": "2", "flag": True, "n": 42, "tags": ["x", "y"]}
    assert xfilter.evaluate(xfilter.parse(expr), record) is expected


@pytest.mark.parametrize("expr", ['field "a"', '"a"', 'field "a"="1" and', '(true',
                                  'field a="1"', "field 'a'='1'", ""])
def test_filter_syntax_errors(expr):
    with pytest.raises(xfilter.FilterError):
        xfilter.parse(expr)


def test_messages(x):
    import xmlrpc.client
    vm = vm_named(x, "tiny-halted")
    message = x.message.create("VM_SNAPSHOTTED", "3", "VM", x.VM.get_uuid(vm), "snapshot made")
    record = x.message.get_record(message)
    assert record["priority"] == "3" and record["cls"] == "VM" and record["body"] == "snapshot made"
    assert message in x.message.get_since(xmlrpc.client.DateTime("19700101T00:00:00Z"))
    assert message not in x.message.get_since(xmlrpc.client.DateTime("29990101T00:00:00Z"))
    x.message.destroy(message)
    assert message not in x.message.get_all()
