"""The CLI's ready line (docs/dev/contracts.md section 2), the state dump, faults from the start."""

import os

import pytest
import XenAPI


def test_login_and_list_vms(xapisim_tiny):
    session = xapisim_tiny.session()
    try:
        records = session.xenapi.VM.get_all_records()
        names = {r["name_label"] for r in records.values()}
        assert {"tiny-running", "tiny-halted"} <= names
    finally:
        session.xenapi.session.logout()


def test_ready_line_has_the_contract_fields(xapisim_tiny):
    info = xapisim_tiny.info
    for key in ("url", "tls_url", "ca_file", "username", "password", "pool_uuid", "hosts", "pid"):
        assert key in info, key
    assert info["url"].startswith("http://127.0.0.1:")
    assert info["tls_url"].startswith("https://127.0.0.1:")
    assert os.path.exists(info["ca_file"])
    assert info["pid"] == xapisim_tiny.proc.pid
    masters = [h for h in info["hosts"] if h["master"]]
    assert len(masters) == 1 and masters[0]["url"] == info["url"]
    for host in info["hosts"]:
        assert set(host) >= {"name", "uuid", "url", "tls_url", "master"}
    x = xapisim_tiny.session().xenapi
    assert x.pool.get_uuid(x.pool.get_all()[0]) == info["pool_uuid"]


def test_state_dump_is_the_database(xapisim_tiny):
    state = xapisim_tiny.state()
    vms = state["tables"]["VM"]
    running = [v for v in vms.values() if v["name_label"] == "tiny-running"][0]
    assert running["power_state"] == "Running"
    assert isinstance(running["memory_static_max"], int)  # internal form, not the wire's strings
    assert set(state) >= {"tables", "faults", "storage", "event_token"}


def test_faults_given_at_start(xapisim_factory):
    sim = xapisim_factory("tiny", faults={"task_failure": {"method": "VM.clone",
                                                           "error": ["SR_FULL", "1", "0"]}})
    x = sim.session().xenapi
    vm = x.VM.get_by_name_label("tiny-halted")[0]
    for _round in range(2):  # per run: no count, stays
        with pytest.raises(XenAPI.Failure) as err:
            x.VM.clone(vm, "c")
        assert err.value.details == ["SR_FULL", "1", "0"]
    assert len(sim.faults.list()) == 1
