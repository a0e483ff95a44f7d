"""Issue 14 (helper part): a good citizen on dom0 — nice/ionice at start (as gentle as xapi's own
compressor by default), a default thread count leaving headroom, a bandwidth cap, cancel of a
detached worker through its status file, and failures marked transient or permanent."""

import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from tests.tools.waiting import wait_for

from .conftest import HELPER, INTERPRETERS, run_helper
from .fake_xapi import VM_UUID
from .test_export_import import XVA, assert_no_leftovers, one_python
from .xvagen import CHUNK


def _thread_nices(pid):
    nices = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        nices.append(int(fields[16]))  # field 19 of stat: nice
    return nices


def _start_compress(*extra):
    return subprocess.Popen([one_python(), HELPER, "compress", "--codec", "zstd"] + list(extra),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# ---------------------------------------------------------------- priorities


def test_default_priority_is_xapis_nice_19_and_idle_io():
    proc = _start_compress()
    try:
        proc.stdin.write(os.urandom(1 << 20))
        proc.stdin.flush()
        assert wait_for(lambda: len(_thread_nices(proc.pid)) >= 3), "the pipeline threads started"
        assert set(_thread_nices(proc.pid)) == {19}, "every thread inherits nice 19"
        if shutil.which("ionice"):
            shown = subprocess.run(["ionice", "-p", str(proc.pid)], stdout=subprocess.PIPE, check=False).stdout.decode()
            assert shown.strip().startswith("idle"), shown
    finally:
        _stdout, stderr = proc.communicate(b"", timeout=30)
    result = json.loads(stderr.decode().strip().splitlines()[-1])
    assert result["ok"] and result["priority"]["nice"] == 19, result
    assert result["priority"]["ionice"] == {"class": 3, "level": 0, "via": "syscall"}, result


def test_priority_can_be_left_alone():
    own = os.getpriority(os.PRIO_PROCESS, 0)
    proc = _start_compress("--nice", "0", "--ionice", "none")
    try:
        proc.stdin.write(b"x" * 1000)
        proc.stdin.flush()
        assert wait_for(lambda: len(_thread_nices(proc.pid)) >= 3)
        assert set(_thread_nices(proc.pid)) == {own}
    finally:
        _stdout, stderr = proc.communicate(b"", timeout=30)
    result = json.loads(stderr.decode().strip().splitlines()[-1])
    assert result["ok"] and "ionice" not in result["priority"], result


def test_best_effort_level_is_applied():
    result = run_helper(one_python(), ["compress", "--codec", "none", "--ionice", "best-effort:6"], b"data")
    assert result.json["priority"]["ionice"] == {"class": 2, "level": 6, "via": "syscall"}, result


def test_priority_failures_are_reported_not_fatal(helper_module, monkeypatch):
    def refuse(klass, level):
        raise OSError(1, "Operation not permitted")
    monkeypatch.setattr(helper_module, "_ioprio_set_syscall", refuse)
    monkeypatch.setattr(helper_module, "_ioprio_set_binary", refuse)
    report = helper_module.apply_priorities(0, "idle")
    assert "ionice" not in report and "Operation not permitted" in report["warnings"][0]


def test_ioprio_syscall_number_known_for_this_machine(helper_module):
    assert os.uname().machine in helper_module.IOPRIO_SET_SYSCALL


@pytest.mark.parametrize("extra,option", [
    (["--nice", "25"], "--nice"),
    (["--nice", "-5"], "--nice"),
    (["--ionice", "fastest"], "--ionice"),
    (["--ionice", "best-effort:9"], "--ionice"),
    (["--ionice", "idle:3"], "--ionice"),
    (["--bandwidth-limit", "0"], "--bandwidth-limit"),
    (["--bandwidth-limit", "-100"], "--bandwidth-limit"),
])
def test_manners_options_are_range_checked(extra, option):
    result = run_helper(one_python(), ["compress", "--codec", "none"] + extra, b"x")
    assert result.code == "BAD_INPUT" and option in result.json["error"]["message"], result


def test_default_threads_leave_headroom(helper_module):
    if not os.path.exists(INTERPRETERS["py36-zstd"]):
        pytest.skip("needs the interpreter with zstandard")
    cores = helper_module.available_cores()
    default = run_helper(INTERPRETERS["py36-zstd"], ["compress", "--codec", "zstd", "--compressor", "zstandard"], b"x" * 100)
    assert default.json["threads"] == max(1, cores // 2), default
    every = run_helper(INTERPRETERS["py36-zstd"], ["compress", "--codec", "zstd", "--compressor", "zstandard", "--threads", "0"],
                       b"x" * 100)
    assert every.json["threads"] == cores, every


# ---------------------------------------------------------------- bandwidth


def test_token_bucket_holds_the_rate_on_a_fake_clock(helper_module):
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
    bucket = helper_module.TokenBucket(1000000, clock=lambda: now[0], sleep=sleep)
    written = 0
    for size in [bucket.quantum] * 200:
        bucket.wait(size)
        written += size
        assert written <= 1000000 * now[0] + bucket.quantum + 1
    assert abs(written / now[0] - 1000000) / 1000000 < 0.02


def test_bandwidth_cap_holds_within_10_percent_over_3_seconds():
    limit = 1000000
    data = os.urandom(3 * limit + 200000)
    proc = subprocess.Popen([one_python(), HELPER, "compress", "--codec", "none", "--nice", "0",
                             "--bandwidth-limit", str(limit)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    feeder = threading.Thread(target=lambda: (proc.stdin.write(data), proc.stdin.close()))
    feeder.start()
    first = None
    received = 0
    first_size = 0
    while True:
        piece = proc.stdout.read1(1 << 20) if hasattr(proc.stdout, "read1") else proc.stdout.read(65536)
        if not piece:
            break
        if first is None:
            first, first_size = time.monotonic(), len(piece)
        received += len(piece)
        last = time.monotonic()
    feeder.join()
    proc.wait(30)
    assert received == len(data)
    rate = (received - first_size) / (last - first)
    assert abs(rate - limit) / limit < 0.10, rate


def test_export_bandwidth_cap(xapi, tmp_path):
    limit = 2 * 1000 * 1000
    out = tmp_path / "vm.xva"
    args = ["export", "--url", xapi.url, "--vm", VM_UUID, "--out", str(out), "--codec", "none",
            "--bandwidth-limit", str(limit)]
    started = time.monotonic()
    result = run_helper(one_python(), args, env={"XAPI_SESSION": xapi.session})
    elapsed = time.monotonic() - started
    assert result.ok, result
    assert out.read_bytes() == XVA
    assert elapsed >= (len(XVA) - 128 * 1024) / float(limit), (elapsed, len(XVA))
    assert result.json["stored_size"] / result.json["duration"] <= 1.1 * limit, result


# ---------------------------------------------------------------- transient or permanent


@pytest.mark.parametrize("error,transient", [
    ({"code": "XAPI_UNREACHABLE"}, True),
    ({"code": "SESSION_INVALID"}, True),
    ({"code": "STREAM_TRUNCATED"}, True),
    ({"code": "STREAM_TRUNCATED", "xapi_error": ["VDI_IO_ERROR", "x"]}, False),
    ({"code": "XAPI_TASK_FAILED", "xapi_error": ["SR_FULL", "1", "2"]}, False),
    ({"code": "XAPI_TASK_FAILED", "xapi_error": ["VM_BAD_POWER_STATE", "r", "halted", "running"]}, False),
    ({"code": "XAPI_TASK_FAILED", "xapi_error": ["HOST_OFFLINE", "h"]}, True),
    ({"code": "CHECKSUM_MISMATCH"}, False),
    ({"code": "NO_SPACE"}, False),
    ({"code": "TIMEOUT"}, False),
    ({"code": "BAD_INPUT"}, False),
])
def test_transient_classification(helper_module, error, transient):
    assert helper_module.is_transient(error) is transient


def test_results_carry_the_transient_flag(xapi, tmp_path):
    args = ["export", "--url", xapi.url, "--vm", VM_UUID, "--codec", "none"]
    lost = run_helper(one_python(), args + ["--out", str(tmp_path / "a.xva")], env={"XAPI_SESSION": "OpaqueRef:gone"})
    assert lost.code == "SESSION_INVALID" and lost.json["error"]["transient"] is True, lost
    xapi.export_http_error = ["VM_BAD_POWER_STATE", "OpaqueRef:x", "halted, suspended", "running"]
    permanent = run_helper(one_python(), args + ["--out", str(tmp_path / "b.xva")], env={"XAPI_SESSION": xapi.session})
    assert permanent.json["error"]["transient"] is False, permanent
    xapi.export_http_error = None
    xapi.cut_after = CHUNK + 5000
    cut = run_helper(one_python(), args + ["--out", str(tmp_path / "c.xva")], env={"XAPI_SESSION": xapi.session})
    assert cut.json["error"]["transient"] is False and cut.json["error"]["xapi_error"][0] == "VDI_IO_ERROR", cut
    unreachable = run_helper(one_python(), ["export", "--url", "http://127.0.0.1:9", "--vm", VM_UUID,
                                            "--out", str(tmp_path / "d.xva")], env={"XAPI_SESSION": "x"})
    assert unreachable.code == "XAPI_UNREACHABLE" and unreachable.json["error"]["transient"] is True


# ---------------------------------------------------------------- cancel


def test_cancel_refuses_a_pid_that_is_not_our_helper(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        status = tmp_path / "status.json"
        status.write_text(json.dumps({"phase": "streaming", "pid": sleeper.pid, "heartbeat": time.time()}))
        result = run_helper(one_python(), ["cancel", "--status-file", str(status)])
        assert result.code == "REFUSED", result
        assert sleeper.poll() is None, "the foreign process was not signalled"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cancel_refuses_a_helper_writing_another_status_file(xapi, tmp_path):
    xapi.stall_after = CHUNK
    xapi.stall_seconds = 15
    mine, other = tmp_path / "mine.json", tmp_path / "other.json"
    args = ["export", "--url", xapi.url, "--vm", VM_UUID, "--out", str(tmp_path / "vm.xva"), "--codec", "none",
            "--detach", "--status-file", str(other)]
    started = run_helper(one_python(), args, env={"XAPI_SESSION": xapi.session})
    assert started.ok, started
    try:
        mine.write_text(json.dumps({"phase": "streaming", "pid": started.json["pid"]}))
        refused = run_helper(one_python(), ["cancel", "--status-file", str(mine)])
        assert refused.code == "REFUSED", refused
        assert os.path.exists("/proc/%d" % started.json["pid"])
    finally:
        run_helper(one_python(), ["cancel", "--status-file", str(other)])


def test_cancel_of_a_finished_worker_does_nothing(tmp_path):
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"phase": "done", "pid": os.getpid(), "result": {"ok": True}}))
    result = run_helper(one_python(), ["cancel", "--status-file", str(status)])
    assert result.ok and result.json["cancelled"] is False, result


def test_cancel_does_not_follow_a_linked_status_file(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"phase": "streaming", "pid": os.getpid()}))
    link = tmp_path / "status.json"
    os.symlink(str(target), str(link))
    result = run_helper(one_python(), ["cancel", "--status-file", str(link)])
    assert result.code == "REFUSED", result


def test_cancel_detached_export_against_the_simulator(xapisim_tiny, tmp_path):
    from .test_simulator_e2e import helper_env, vm_by_name
    sim = xapisim_tiny
    session = sim.session()
    record = vm_by_name(session, "tiny-halted")[1]
    sim.faults.set(stall_seconds=60, stall_after_bytes=1000000, path="/export", count=1)
    try:
        out = tmp_path / "vm.xva.zst"
        status = tmp_path / "export.status.json"
        args = ["export", "--url", sim.url, "--vm", record["uuid"], "--out", str(out), "--detach",
                "--status-file", str(status)]
        started = run_helper(one_python(), args, env=helper_env(session))
        assert started.ok, started
        pid = started.json["pid"]
        assert wait_for(lambda: json.loads(status.read_text()).get("phase") == "streaming", 20)
        ours = [r for r in session.xenapi.task.get_all_records().values()
                if r["name_label"] == "xapi-backup export" and r["status"] == "pending"]
        assert len(ours) == 1
        cancelled = run_helper(one_python(), ["cancel", "--status-file", str(status)], timeout=60)
        assert cancelled.ok and cancelled.json["cancelled"] is True and cancelled.json["finished"] is True, cancelled
        final = cancelled.json["result"]
        assert final["ok"] is False and final["error"]["code"] == "INTERRUPTED", final
        assert wait_for(lambda: not os.path.exists("/proc/%d" % pid), 10)
        # out of band: nothing left behind, at xapi or on disk
        assert not out.exists()
        assert_no_leftovers(tmp_path)
        pending = [r for r in session.xenapi.task.get_all_records().values()
                   if r["name_label"] == "xapi-backup export" and r["status"] in ("pending", "cancelling")]
        assert pending == []
    finally:
        sim.faults.clear()
    # the VM is not left locked by a half-dead export: the next one succeeds
    again = run_helper(one_python(), ["export", "--url", sim.url, "--vm", record["uuid"],
                                      "--out", str(tmp_path / "again.xva.zst")], env=helper_env(session))
    assert again.ok, again


# ---------------------------------------------------------------- speed: no hash nobody reads


def test_compress_hashes_its_output_only_when_asked():
    import hashlib
    data = os.urandom(300000)
    bare = run_helper(one_python(), ["compress", "--codec", "none"], data)
    assert bare.ok and bare.json["sha256"] is None, bare
    hashed = run_helper(one_python(), ["compress", "--codec", "none", "--sha256"], data)
    assert hashed.json["sha256"] == hashlib.sha256(data).hexdigest(), hashed


def test_nice_is_an_absolute_level_never_raised():
    def start_at_5():
        os.nice(5 - os.getpriority(os.PRIO_PROCESS, 0))
    asked_10 = run_helper(one_python(), ["compress", "--codec", "none", "--nice", "10"], b"x", preexec_fn=start_at_5)
    assert asked_10.json["priority"]["nice"] == 10, asked_10
    asked_3 = run_helper(one_python(), ["compress", "--codec", "none", "--nice", "3"], b"x", preexec_fn=start_at_5)
    assert asked_3.json["priority"]["nice"] == 5, asked_3
