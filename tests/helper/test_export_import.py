"""export / import / fetch against a small stand-in for xapi (fake_xapi.py), under every interpreter.

Failures must leave no partial file, cancel the task and say what happened.
"""

import gzip
import io
import json
import os
import resource
import signal
import struct
import subprocess
import time

import pytest
import zstandard

from tests.tools.waiting import wait_for

from .conftest import HELPER, INTERPRETERS, run_helper
from .fake_xapi import NEW_VM_REF, NEW_VM_UUID, VM_UUID
from .xvagen import CHUNK, SAMPLE_XVA, sample_xva

XVA = SAMPLE_XVA


def session_env(fake):
    return {"XAPI_SESSION": fake.session}


def export(python, fake, out, *extra, **kwargs):
    args = ["export", "--url", fake.url, "--vm", VM_UUID, "--out", str(out)] + list(extra)
    return run_helper(python, args, env=session_env(fake), **kwargs)


def assert_no_leftovers(directory):
    names = sorted(os.listdir(str(directory)))
    assert not [n for n in names if n.endswith(".partial") or n.endswith(".lock") or n.endswith(".tmp")], names


def assert_task_cancelled(fake):
    """The helper asked xapi to cancel its one task. (The task may already have failed on its own
    when the helper closed the connection first; what matters is that it is not left running.)"""
    [task] = fake.tasks.values()
    assert task.get("cancel_called") and task["status"] in ("cancelled", "failure"), task


def one_python():
    return INTERPRETERS["py36-nozstd"] if os.path.exists(INTERPRETERS["py36-nozstd"]) else INTERPRETERS["py3"]


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("codec,suffix", [("zstd", ".zst"), ("gzip", ".gz"), ("none", "")])
def test_export_writes_a_valid_backup(python, xapi, tmp_path, codec, suffix):
    out = tmp_path / ("vm.xva" + suffix)
    result = export(python, xapi, out, "--codec", codec)
    assert result.ok, result
    res = result.json
    stored = out.read_bytes()
    assert res["path"] == str(out)
    assert res["raw_size"] == len(XVA)
    assert res["stored_size"] == len(stored)
    # format 2: the stored file's digest is BLAKE2b-256 (issue 14), as the repository's digest_of writes it
    assert res["digest"] == "blake2b:" + __import__("hashlib").blake2b(stored, digest_size=32).hexdigest()
    assert res["sha256"] is None
    assert res["codec"] == codec
    assert res["task"]["status"] == "success"
    assert [d["ref"] for d in res["xva"]["vdis"]] == ["Ref:12", "Ref:9"]
    assert res["xva"]["checksum_kind"] == "xxhash"
    assert os.stat(str(out)).st_mode & 0o777 == 0o600
    if codec == "zstd":
        assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == XVA
    elif codec == "gzip":
        assert gzip.decompress(stored) == XVA
    else:
        assert stored == XVA
    assert_no_leftovers(tmp_path)
    assert xapi.tasks[res["task"]["ref"]].get("destroyed")
    # verify agrees with the export about the raw stream
    verify = run_helper(python, ["verify", "--in", str(out), "--digest", "blake2b"])
    assert verify.ok and verify.json["raw_hash"] == res["raw_hash"] and verify.json["digest"] == res["digest"]


def test_export_follows_redirect_to_another_host(xapi, tmp_path):
    xapi.redirect_once = True
    result = export(one_python(), xapi, tmp_path / "vm.xva.gz", "--codec", "gzip", "--allow-redirect-host", "localhost")
    assert result.ok, result
    assert len([r for r in xapi.requests if r[0] == "GET"]) == 2


def test_export_by_ref(xapi, tmp_path):
    args = ["export", "--url", xapi.url, "--vm", "OpaqueRef:11111111-vm", "--out", str(tmp_path / "a.xva")]
    result = run_helper(one_python(), args + ["--codec", "none"], env=session_env(xapi))
    assert result.ok, result
    assert "VM.get_by_uuid" not in xapi.calls


def test_session_from_stdin(xapi, tmp_path):
    args = ["export", "--url", xapi.url, "--vm", VM_UUID, "--out", str(tmp_path / "a.xva"), "--session-stdin",
            "--codec", "none"]
    result = run_helper(one_python(), args, stdin=(xapi.session + "\n").encode())
    assert result.ok, result


def test_no_session_is_an_error(xapi, tmp_path):
    result = run_helper(one_python(), ["export", "--url", xapi.url, "--vm", VM_UUID, "--out", str(tmp_path / "a")])
    assert result.code == "NO_SESSION"


def test_stream_cut_removes_partial_and_fails(python, xapi, tmp_path):
    xapi.cut_after = CHUNK + 5000
    result = export(python, xapi, tmp_path / "vm.xva.zst")
    assert not result.ok
    assert result.code in ("STREAM_TRUNCATED", "XAPI_TASK_FAILED"), result
    assert not (tmp_path / "vm.xva.zst").exists()
    assert_no_leftovers(tmp_path)
    assert xapi.session not in result.stdout.decode() + result.stderr.decode()


def test_task_failure_after_complete_stream(xapi, tmp_path):
    xapi.export_task_error = ["VDI_IO_ERROR", "Device I/O error"]
    result = export(one_python(), xapi, tmp_path / "vm.xva.zst")
    assert result.code == "XAPI_TASK_FAILED", result
    assert result.json["error"]["xapi_error"] == ["VDI_IO_ERROR", "Device I/O error"]
    assert not (tmp_path / "vm.xva.zst").exists()
    assert_no_leftovers(tmp_path)


def test_http_error_reports_the_task_error(xapi, tmp_path):
    xapi.export_http_error = ["VM_BAD_POWER_STATE", "OpaqueRef:x", "halted, suspended", "running"]
    result = export(one_python(), xapi, tmp_path / "vm.xva.zst")
    assert result.code == "XAPI_TASK_FAILED"
    assert result.json["error"]["xapi_error"][0] == "VM_BAD_POWER_STATE"
    assert_no_leftovers(tmp_path)


def test_bad_chunk_in_export_fails_and_cancels(xapi, tmp_path):
    damaged = bytearray(XVA)
    damaged[damaged.find(sample_xva()[0][3].data) + 10] ^= 0xFF
    xapi.xva = bytes(damaged)
    xapi.stall_after = 4 * CHUNK   # the server is still streaming when the helper aborts
    xapi.stall_seconds = 5
    result = export(one_python(), xapi, tmp_path / "vm.xva.gz", "--codec", "gzip")
    assert result.code == "CHECKSUM_MISMATCH", result
    assert_no_leftovers(tmp_path)
    assert not (tmp_path / "vm.xva.gz").exists()
    assert_task_cancelled(xapi)


def test_stalled_source_times_out(python, xapi, tmp_path):
    """On every interpreter: the compressing export reads in its main thread (the serial pipeline),
    and its watchdog must end that blocked read."""
    xapi.stall_after = CHUNK
    xapi.stall_seconds = 30
    started = time.time()
    result = export(python, xapi, tmp_path / "vm.xva.zst", "--stall-timeout", "1.5")
    assert result.code == "STALLED", result
    assert time.time() - started < 20
    assert_no_leftovers(tmp_path)
    assert_task_cancelled(xapi)


def test_overall_timeout(xapi, tmp_path):
    xapi.stall_after = CHUNK
    xapi.stall_seconds = 30
    result = export(one_python(), xapi, tmp_path / "vm.xva.zst", "--timeout", "1.5", "--stall-timeout", "60")
    assert result.code in ("TIMEOUT", "STALLED"), result
    assert_no_leftovers(tmp_path)


def _start_export(python, fake, out, *extra):
    env = dict(os.environ, XAPI_SESSION=fake.session)
    args = [python, HELPER, "export", "--url", fake.url, "--vm", VM_UUID, "--out", str(out)] + list(extra)
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_removes_partial_and_cancels_task(python, xapi, tmp_path, sig):
    xapi.stall_after = 2 * CHUNK
    xapi.stall_seconds = 30
    out = tmp_path / "vm.xva.zst"
    proc = _start_export(python, xapi, out)
    assert wait_for(lambda: any(n.startswith(".vm.xva.zst.") and n.endswith(".partial") for n in os.listdir(str(tmp_path))))
    # the session is not visible to other dom0 users through argv
    cmdline = open("/proc/%d/cmdline" % proc.pid, "rb").read()
    assert xapi.session.encode() not in cmdline
    assert wait_for(lambda: any(t["status"] == "pending" for t in xapi.tasks.values()))
    time.sleep(0.3)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result["error"]["code"] == "INTERRUPTED", (result, stderr[-500:])
    assert proc.returncode != 0
    assert not out.exists()
    assert_no_leftovers(tmp_path)
    assert_task_cancelled(xapi)


@pytest.fixture
def tiny_fs(tmp_path):
    """A 256 KiB tmpfs (needs root); the real ENOSPC path."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.call(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                       stderr=subprocess.DEVNULL) != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.call(["umount", str(mnt)])


def test_full_file_system_is_no_space(python, xapi, tiny_fs):
    xapi.stall_after = 3 * CHUNK  # still streaming when the disk fills up
    xapi.stall_seconds = 10
    result = export(python, xapi, tiny_fs / "vm.xva", "--codec", "none")
    assert result.code == "NO_SPACE", result
    assert os.listdir(str(tiny_fs)) == []
    assert_task_cancelled(xapi)


def test_file_size_limit_is_no_space(xapi, tmp_path):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200000, 200000))
    result = export(one_python(), xapi, tmp_path / "vm.xva", "--codec", "none", preexec_fn=limit)
    assert result.code == "NO_SPACE", result
    assert_no_leftovers(tmp_path)


def test_stalled_writer_in_process(helper_module):
    """Pipeline with a writer that blocks: STALLED after the stall timeout, not a hang."""
    block = bytearray(b"x" * (1 << 20))
    blocks = [block] * 40
    blocked = __import__("threading").Event()

    def next_block(activity):
        return blocks.pop() if blocks else b""

    def stuck_write(data):
        blocked.wait(30)

    pipeline = helper_module.Pipeline(next_block, stuck_write, "stuck", helper_module.NullValidator(),
                                      helper_module.NoCompression(), 8 << 20, helper_module.Progress(quiet=True),
                                      stall_timeout=1.0)
    started = time.time()
    with pytest.raises(helper_module.HelperError) as info:
        pipeline.run()
    blocked.set()
    assert info.value.code == "STALLED"
    assert time.time() - started < 10


# ---------------------------------------------------------------- detach, status, lock


def test_detach_status_and_lock(python, xapi, tmp_path):
    xapi.stall_after = CHUNK
    xapi.stall_seconds = 4
    out = tmp_path / "vm.xva.zst"
    status_file = tmp_path / "status.json"
    result = export(python, xapi, out, "--detach", "--status-file", str(status_file))
    assert result.ok and result.json["detached"] is True, result
    pid = result.json["pid"]
    assert pid != os.getpid()
    status = run_helper(python, ["status", "--status-file", str(status_file)])
    assert status.ok and status.json["pid"] == pid and status.json["alive"] is True, status
    assert xapi.session not in status_file.read_text()
    # a second export of the same target is refused while the first runs
    second = export(python, xapi, out)
    assert second.code == "LOCKED", second
    assert second.json["error"]["holder_pid"] == pid
    assert wait_for(lambda: json.loads(status_file.read_text()).get("phase") == "done", 40)
    final = run_helper(python, ["status", "--status-file", str(status_file)])
    assert final.json["result"]["ok"] is True and final.json["alive"] is False
    assert final.json["result"]["raw_size"] == len(XVA)
    assert out.exists()
    assert_no_leftovers(tmp_path)
    heartbeat_age = time.time() - final.json["heartbeat"]
    assert heartbeat_age < 30


def test_status_heartbeat_is_refreshed(xapi, tmp_path):
    xapi.stall_after = CHUNK
    xapi.stall_seconds = 5
    status_file = tmp_path / "status.json"
    result = export(one_python(), xapi, tmp_path / "vm.xva.zst", "--detach", "--status-file", str(status_file))
    assert result.ok
    first = json.loads(status_file.read_text())["heartbeat"]
    assert wait_for(lambda: json.loads(status_file.read_text())["heartbeat"] > first, 5)
    assert wait_for(lambda: json.loads(status_file.read_text()).get("phase") == "done", 40)


def test_status_of_dead_worker(tmp_path, python):
    status_file = tmp_path / "status.json"
    status_file.write_text(json.dumps({"phase": "streaming", "pid": 999999, "heartbeat": time.time() - 100}))
    result = run_helper(python, ["status", "--status-file", str(status_file)])
    assert result.ok and result.json["alive"] is False
    missing = run_helper(python, ["status", "--status-file", str(tmp_path / "nope")])
    assert missing.code == "NOT_FOUND"


# ---------------------------------------------------------------- import


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    base = tmp_path_factory.mktemp("stored")
    files = {"none": base / "vm.xva", "zstd": base / "vm.xva.zst", "gzip": base / "vm.xva.gz"}
    files["none"].write_bytes(XVA)
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    files["zstd"].write_bytes(cobj.compress(XVA) + cobj.flush())
    files["gzip"].write_bytes(gzip.compress(XVA))
    return files


def run_import(python, fake, path, *extra):
    args = ["import", "--url", fake.url, "--in", str(path), "--sr", "sr-uuid-1"] + list(extra)
    return run_helper(python, args, env=session_env(fake))


@pytest.mark.parametrize("codec", ["none", "zstd", "gzip"])
def test_import_sends_raw_xva_with_content_length(python, xapi, stored, codec):
    result = run_import(python, xapi, stored[codec], "--restore")
    assert result.ok, result
    assert result.json["vm_refs"] == [NEW_VM_REF]
    assert result.json["vm_uuids"] == [NEW_VM_UUID]
    received = xapi.imports[-1]
    assert received["content_length"] == len(XVA) == received["received"]
    assert received["raw"] == XVA
    assert received["query"]["sr_uuid"] == "sr-uuid-1" and received["query"]["restore"] == "true"
    assert "force" not in received["query"]
    assert result.json["xva"]["checksum_kind"] == "xxhash"


def test_import_raw_size_given(xapi, stored):
    result = run_import(one_python(), xapi, stored["gzip"], "--raw-size", str(len(XVA)))
    assert result.ok and result.json["content_length_source"] == "given"


def test_import_send_compressed(xapi, stored):
    result = run_import(one_python(), xapi, stored["gzip"], "--send-compressed", "--force")
    assert result.ok, result
    received = xapi.imports[-1]
    assert received["content_length"] == os.path.getsize(str(stored["gzip"]))
    assert received["raw"] == XVA and received["query"]["force"] == "true"


def test_import_server_answering_after_the_body(xapi, stored):
    xapi.import_early_answer = False
    result = run_import(one_python(), xapi, stored["none"], "--header-wait", "0.2")
    assert result.ok, result


def test_import_redirect(xapi, stored):
    xapi.redirect_once = True
    result = run_import(one_python(), xapi, stored["zstd"], "--allow-redirect-host", "localhost")
    assert result.ok, result
    assert len([r for r in xapi.requests if r[0] == "PUT"]) == 2


def test_import_task_failure(xapi, stored):
    xapi.import_task_error = ["SR_FULL", "1", "2"]
    result = run_import(one_python(), xapi, stored["zstd"])
    assert result.code == "XAPI_TASK_FAILED" and result.json["error"]["xapi_error"][0] == "SR_FULL"


def test_import_aborts_on_a_bad_chunk(python, xapi, tmp_path):
    damaged = bytearray(XVA)
    damaged[damaged.find(sample_xva()[0][3].data) + 10] ^= 0xFF
    path = tmp_path / "bad.xva.zst"
    path.write_bytes(zstandard.ZstdCompressor(level=1).compress(bytes(damaged)))
    result = run_import(python, xapi, path)
    assert result.code == "CHECKSUM_MISMATCH", result
    # the body never completed and the task was cancelled
    assert xapi.imports[-1]["received"] < len(XVA) if xapi.imports else True
    assert all(t["status"] in ("cancelled", "failure") for t in xapi.tasks.values())


def _helper_zstd(python, data, *extra):
    result = run_helper(python, ["compress", "--codec", "zstd", "--threads", "0"] + list(extra), data)
    assert result.ok, result
    return result.stdout


def test_import_reads_the_raw_size_from_the_helpers_zstd_trailer(python, xapi, tmp_path):
    """Issue 14: a helper-written zstd file ends with a skippable frame holding the raw size, so import
    needs no counting decompression pass before its PUT; every zstd decoder skips the frame."""
    path = tmp_path / "vm.xva.zst"
    path.write_bytes(_helper_zstd(python, XVA))
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes()), read_across_frames=True).read() == XVA
    result = run_import(python, xapi, path)
    assert result.ok, result
    assert result.json["content_length_source"] == "zstd-trailer"
    assert xapi.imports[-1]["raw"] == XVA and xapi.imports[-1]["content_length"] == len(XVA)


@pytest.mark.parametrize("delta", [-1, 1])
def test_import_refuses_a_lying_trailer_and_imports_nothing(python, xapi, tmp_path, delta):
    stored = bytearray(_helper_zstd(python, XVA))
    stored[-8:] = struct.pack("<Q", len(XVA) + delta)
    path = tmp_path / "lying.xva.zst"
    path.write_bytes(bytes(stored))
    result = run_import(python, xapi, path)
    assert not result.ok and result.code in ("RAW_SIZE", "STREAM_TRUNCATED", "XAPI_TASK_FAILED", "BAD_XVA"), result
    assert all(t["status"] in ("cancelled", "failure") for t in xapi.tasks.values())
    assert not xapi.imports or xapi.imports[-1]["raw"] != XVA or xapi.imports[-1]["content_length"] != len(XVA)


def test_import_of_a_truncated_helper_zstd_file_fails(python, xapi, tmp_path):
    stored = _helper_zstd(python, XVA)
    path = tmp_path / "cut.xva.zst"
    path.write_bytes(stored[:len(stored) // 2])
    result = run_import(python, xapi, path)
    assert result.code in ("STREAM_TRUNCATED", "RAW_SIZE", "DECOMPRESS_FAILED"), result
    assert all(t["status"] in ("cancelled", "failure") for t in xapi.tasks.values())


def test_import_missing_file(xapi, tmp_path):
    result = run_import(one_python(), xapi, tmp_path / "nope.xva")
    assert result.code == "NOT_FOUND"


# ---------------------------------------------------------------- fetch


def test_fetch_pool_database(python, xapi, tmp_path):
    out = tmp_path / "pool" / "pool-db.xml"
    result = run_helper(python, ["fetch", "--url", xapi.url, "--path", "/pool/xmldbdump", "--out", str(out)],
                        env=session_env(xapi))
    assert result.ok, result
    assert out.read_bytes() == b"<database><manifest/></database>"
    assert result.json["size"] == out.stat().st_size
    assert os.stat(str(out)).st_mode & 0o777 == 0o600
    assert_no_leftovers(out.parent)
