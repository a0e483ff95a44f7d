"""Issue 11 item 8 (helper part): every numeric option is range-checked before anything happens,
with a one-line BAD_INPUT naming the option; nothing is started at xapi, no file is created."""

import os

import pytest

from .conftest import run_helper
from .fake_xapi import VM_UUID, FakeXapi
from .test_export_import import XVA, one_python


@pytest.fixture(scope="module")
def xapi():
    fake = FakeXapi(XVA).start()
    yield fake
    fake.stop()


EXPORT_CASES = [
    (["--timeout", "-1"], "--timeout"),
    (["--timeout", "0"], "--timeout"),
    (["--timeout", "nan"], "--timeout"),
    (["--stall-timeout", "0"], "--stall-timeout"),
    (["--stall-timeout", "-1"], "--stall-timeout"),
    (["--stall-timeout", "inf"], "--stall-timeout"),
    (["--threads", "100000"], "--threads"),
    (["--threads", "-1"], "--threads"),
    (["--buffer-mib", "0"], "--buffer-mib"),
    (["--buffer-mib", "100000"], "--buffer-mib"),
    (["--level", "0"], "--level"),
    (["--level", "20"], "--level"),
    (["--codec", "gzip", "--level", "10"], "--level"),
    (["--threads", "many"], "--threads"),
]


@pytest.mark.parametrize("extra,option", EXPORT_CASES, ids=[" ".join(c[0]) for c in EXPORT_CASES])
def test_export_option_out_of_range_changes_nothing(xapi, tmp_path, extra, option):
    calls_before = len(xapi.calls)
    out = tmp_path / "vm" / "vm.xva.zst"
    args = ["export", "--url", xapi.url, "--vm", VM_UUID, "--out", str(out)] + extra
    result = run_helper(one_python(), args, env={"XAPI_SESSION": xapi.session}, timeout=20)
    assert result.code == "BAD_INPUT" and result.returncode == 2, result
    message = result.json["error"]["message"]
    assert option in message and "\n" not in message, message
    assert len(xapi.calls) == calls_before, "nothing may reach xapi"
    assert not os.path.exists(str(out.parent)), "nothing may be created"


@pytest.mark.parametrize("args,option", [
    (["import", "--url", "http://127.0.0.1:9", "--in", "x", "--raw-size", "-5"], "--raw-size"),
    (["import", "--url", "http://127.0.0.1:9", "--in", "x", "--header-wait", "-1"], "--header-wait"),
    (["import", "--url", "http://127.0.0.1:9", "--in", "x", "--timeout", "-1"], "--timeout"),
    (["verify", "--in", "x", "--timeout", "0"], "--timeout"),
    (["fetch", "--url", "http://127.0.0.1:9", "--path", "/pool/xmldbdump", "--out", "o", "--stall-timeout", "0"],
     "--stall-timeout"),
    (["compress", "--threads", "5000"], "--threads"),
    (["decompress", "--buffer-mib", "1"], "--buffer-mib"),
])
def test_other_commands_check_their_ranges(args, option):
    result = run_helper(one_python(), args, env={"XAPI_SESSION": "OpaqueRef:x"}, timeout=20)
    assert result.code == "BAD_INPUT" and option in result.json["error"]["message"], result


def test_threads_are_capped_at_the_core_count(helper_module):
    cores = helper_module.available_cores()
    for asked, used in ((0, 0), (cores, cores), (1024, cores)):
        args = helper_module.build_parser().parse_args(["compress", "--threads", str(asked)])
        helper_module.validate_options(args)
        assert args.threads == used


def test_1024_threads_run_with_the_cores_and_little_memory():
    """threads: 1024 used to start 1024 compression jobs (2.5 GiB RSS)."""
    from .hostile import run_measured
    result = run_measured(one_python(), ["compress", "--threads", "1024", "--codec", "gzip"], stdin=os.urandom(1 << 20))
    assert result.ok and result.json["threads"] <= os.cpu_count(), result
    assert result.max_rss_mib < 200, result


def test_usage_error_is_one_json_line(tmp_path):
    result = run_helper(one_python(), ["export", "--url", "http://127.0.0.1:9"], timeout=20)
    assert result.code == "BAD_INPUT" and "--vm" in result.json["error"]["message"], result
