"""Issue 14: the helper starts once per status poll and repo-* call on dom0, so the modules only the
network subcommands need (http.client, ssl, urllib, xmlrpc, xml, and email behind them) are imported
by the code paths that use them, not at start-up."""

import gzip
import json
import os
import subprocess

from .conftest import HELPER
from .fake_xapi import VM_UUID
from .xvagen import SAMPLE_XVA

NETWORK_AND_XML = ("http", "xmlrpc", "ssl", "email", "xml", "urllib")

# Runs the helper's main() in-process, then writes the top-level names of the modules loaded by then
# (Python 3.6 has no -X importtime).
WRAPPER = """
import json, runpy, sys
out, helper, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
namespace = runpy.run_path(helper, run_name="xapi_backup_helper")
try:
    namespace["main"](argv)
finally:
    with open(out, "w") as handle:
        json.dump(sorted(set(name.split(".")[0] for name in sys.modules)), handle)
"""


def loaded_modules(python, tmp_path, args, stdin=b"", env=None):
    """The top-level modules loaded by one helper run, and the finished process."""
    out = tmp_path / "modules.json"
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([python, "-c", WRAPPER, str(out), HELPER] + list(args), input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, timeout=60, check=False)
    return set(json.loads(out.read_text())), proc


def result_of(args, proc):
    """The run's JSON result: the last line of stdout (stderr for compress and decompress)."""
    stream = proc.stderr if args[0] in ("compress", "decompress") else proc.stdout
    return json.loads(stream.decode().strip().splitlines()[-1])


def test_local_subcommands_import_no_network_or_xml_module(python, tmp_path):
    data = b"local data " * 1000
    bad_crc = bytearray(gzip.compress(data))
    bad_crc[-6] ^= 0x01
    runs = [  # (argv, stdin, None for success, else the error code expected or "any")
        (["status", "--status-file", str(tmp_path / "absent.status")], b"", "NOT_FOUND"),
        (["cancel", "--status-file", str(tmp_path / "absent.status")], b"", "NOT_FOUND"),
        (["self-test"], b"", None),
        (["repo-scan", "--repo", str(tmp_path)], b"", None),
        (["compress", "--codec", "zstd", "--nice", "0", "--ionice", "none"], data, None),
        (["decompress", "--nice", "0", "--ionice", "none"], None, None),  # stdin: compress's output
        # a failing local reader goes through the except clauses that name ssl's and http.client's errors
        (["decompress", "--nice", "0", "--ionice", "none"], bytes(bad_crc), "any"),
    ]
    compressed = b""
    for args, stdin, code in runs:
        modules, proc = loaded_modules(python, tmp_path, args, compressed if stdin is None else stdin)
        result = result_of(args, proc)
        if code is None:
            assert result["ok"], (args, result)
        else:
            assert not result["ok"] and code in ("any", result["error"]["code"]), (args, result)
        assert not modules & set(NETWORK_AND_XML), (args, sorted(modules & set(NETWORK_AND_XML)))
        if args[0] == "compress":
            compressed = proc.stdout
        if args[0] == "decompress" and code is None:
            assert proc.stdout == data


def test_the_paths_that_need_them_still_import_them(python, xapi, tmp_path):
    """The check above would pass on a helper that imports nothing at all: export (HTTP, XML-RPC,
    the XVA's ova.xml) must load what it uses, and succeed."""
    args = ["export", "--url", xapi.url, "--vm", VM_UUID, "--out", str(tmp_path / "vm.xva"), "--codec", "none"]
    modules, proc = loaded_modules(python, tmp_path, args, env={"XAPI_SESSION": xapi.session})
    assert json.loads(proc.stdout.decode().splitlines()[-1])["ok"], proc.stderr[-600:]
    assert {"http", "urllib", "xmlrpc", "xml"} <= modules
    assert (tmp_path / "vm.xva").read_bytes() == SAMPLE_XVA


def test_an_except_clause_names_the_exceptions_of_imported_modules_only(helper_module):
    import ssl

    assert helper_module.exception_class_if_imported("ssl", "SSLError") is ssl.SSLError
    never = helper_module.exception_class_if_imported("no_such_module_imported", "Error")
    for error in (OSError("a local file"), ValueError("a bug")):
        try:
            try:
                raise error
            except never:
                raise AssertionError("caught by the stand-in")
            except (OSError, never):  # the tuple form of ReaderThread.run
                assert isinstance(error, OSError)
        except ValueError:
            assert isinstance(error, ValueError)
