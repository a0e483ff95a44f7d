"""The simulator answers the real XenAPI client (tiny pool)."""


def test_login_and_list_vms(xapisim_tiny):
    session = xapisim_tiny.session()
    try:
        records = session.xenapi.VM.get_all_records()
        names = {r["name_label"] for r in records.values()}
        assert {"tiny-running", "tiny-halted"} <= names
    finally:
        session.xenapi.session.logout()
