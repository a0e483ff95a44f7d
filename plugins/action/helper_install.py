# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Install xapi-backup-helper on a host without running any Python module there.

Everything on the target is a shell command (``_low_level_execute_command``) or a file transfer
(``connection.put_file``): dom0 has Python 3.6, which ansible-core >= 2.17 cannot drive.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import secrets
import shlex

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.action import ActionBase

from ansible_collections.xapi.backup.plugins.module_utils._constants import DEFAULT_HELPER_PATH
from ansible_collections.xapi.backup.plugins.modules.helper_install import argument_spec
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import launch_argv

DEFAULT_DEST = DEFAULT_HELPER_PATH
MIN_PYTHON = (3, 6)
WHEEL_MARKER = ".xapi-backup-wheel.sha256"
WHEEL_SWAP_TRIES = 5  # renames another install at the same time can make this one retry
WHEEL_SWAP_LOST = 75  # the exit status of a swap that gave up (EX_TEMPFAIL)
BUNDLED_HELPER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "roles", "helper", "files", "xapi-backup-helper",
)

#: Declared once, in the doc stub plugins/modules/helper_install.py (validate-modules checks it against the docs).
ARGUMENT_SPEC = argument_spec()

# name-version(-build)?-python-abi-platform.whl (PEP 427)
_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_python_version(stdout: str):
    """``(3, 6)`` from the output of ``print(sys.version_info[:2])``, or None."""
    match = re.search(r"\((\d+), (\d+)\)", stdout or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def lib_dir_for(dest: str, version) -> str:
    """Where the helper looks for bundled packages: ``<prefix>/lib/pythonX.Y`` beside ``<prefix>/bin``."""
    prefix = posixpath.dirname(posixpath.dirname(dest))
    return posixpath.join(prefix, "lib", "python%d.%d" % tuple(version))


def wheel_mismatch(filename: str, version, machine: str):
    """None when the wheel can be imported by CPython ``version`` on ``machine``, else why not."""
    match = _WHEEL_RE.match(filename)
    if not match:
        return "%s is not a wheel file name (name-version-python-abi-platform.whl)" % filename
    py_tags = match.group("py").split(".")
    wanted = "cp%d%d" % tuple(version)
    if wanted not in py_tags and "py3" not in py_tags and "py%d%d" % tuple(version) not in py_tags:
        return "wheel %s is for %s, the target runs Python %d.%d (%s)" % (filename, match.group("py"), version[0],
                                                                          version[1], wanted)
    platforms = match.group("plat").split(".")
    if "any" not in platforms and not any(p.endswith("_" + machine) for p in platforms):
        return "wheel %s is for %s, the target is %s" % (filename, match.group("plat"), machine)
    return None


def cache_dir_of(dest: str) -> str:
    return posixpath.join(posixpath.dirname(dest), "__pycache__")


def _entry_shell(path: str, quoted: bool = False) -> str:
    """Shell that prints ``link``, ``other`` or ``<owner uid>:<octal mode>`` for ``path``, nothing when absent."""
    q = '"%s"' % path if quoted else shlex.quote(path)
    return ("$(if [ -L {q} ]; then echo link; elif [ -d {q} ] || [ -f {q} ]; then stat -c %u:%a {q};"
            " elif [ -e {q} ]; then echo other; fi)").format(q=q)


def _lib_entries_shell(lib_dir: str) -> str:
    """Shell that prints the first entry below ``lib_dir`` that is a link, owned by neither root nor
    the connecting user, or writable by group or others, as ``<uid>:<octal mode>:<type>:<path>``
    (nothing when all are sound). The name is someone else's text: cut to 200 bytes, every byte that
    is not printable (a newline would forge a key) becomes ``?``."""
    return ("$(find {q} -mindepth 1 \\( -type l -o \\( ! -uid 0 ! -uid \"$(id -u)\" \\) -o -perm /022 \\)"
            " -printf '%U:%m:%y:%P' -quit 2>/dev/null | head -c 200 | tr -c '[:print:]' '?')").format(q=shlex.quote(lib_dir))


def parse_keyvalues(stdout: str) -> dict:
    values = {}
    for line in (stdout or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _foreign(owner: str, uid: str) -> bool:
    return owner not in ("0", uid)


#: Python run on the target (``python -I -c PATH_WALK <directory>``) that resolves ``<directory>`` as the
#: kernel does, component by component, following every link, and prints each directory it looks in
#: and each link it follows as ``walk<n>=<kind d|l|o>:<owner uid>:<octal mode>:<path>`` in that order,
#: then ``walkend=ok`` (``walkend=loop`` past MAX_LINKS links). Whoever can write any of them can
#: swap the helper's directory, including a directory a link leads into (``/opt`` -> ``/data/opt``:
#: ``/data``). A missing component ends the walk: the install makes the rest. Names are someone
#: else's bytes: cut to 200, every byte that is not printable ASCII becomes ``?`` (a newline would
#: forge a key). Standard library only, Python >= 3.6.
MAX_LINKS = 40  # the kernel's own limit (MAXSYMLINKS)
PATH_WALK = "\n".join([
    "import os, stat, sys",
    "out = sys.stdout.buffer",
    "def emit(n, kind, path, st):",
    "    shown = bytes(c if 32 <= c < 127 else 63 for c in os.fsencode(path)[:200])",
    "    out.write(b'walk%d=%s:%d:%o:%s\\n' % (n, kind, st.st_uid, stat.S_IMODE(st.st_mode), shown))",
    "todo, cur, n, links, end = sys.argv[1].split('/'), '/', 0, 0, b'ok'",
    "emit(n, b'd', cur, os.lstat(cur))",
    "while todo:",
    "    name = todo.pop(0)",
    "    if name in ('', '.'):",
    "        continue",
    "    if name == '..':",
    "        cur = os.path.dirname(cur)",
    "        continue",
    "    path = os.path.join(cur, name)",
    "    try:",
    "        st = os.lstat(path)",
    "    except FileNotFoundError:",
    "        break",
    "    n += 1",
    "    if stat.S_ISLNK(st.st_mode):",
    "        links += 1",
    "        if links > %d:" % MAX_LINKS,
    "            end = b'loop'",
    "            break",
    "        emit(n, b'l', path, st)",
    "        target = os.readlink(path)",
    "        todo = target.split('/') + todo",
    "        cur = '/' if target.startswith('/') else cur",
    "        continue",
    "    emit(n, b'd' if stat.S_ISDIR(st.st_mode) else b'o', path, st)",
    "    if not stat.S_ISDIR(st.st_mode):",
    "        break",
    "    cur = path",
    "out.write(b'walkend=%s\\n' % end)",
])


def walk_shell(python: str, directory: str) -> str:
    """Shell that runs PATH_WALK on ``directory`` with the target's ``python`` (isolated: no working
    directory or environment on its ``sys.path``)."""
    return "%s -I -c %s %s" % (shlex.quote(python), shlex.quote(PATH_WALK), shlex.quote(directory))


def walk_entries(state: dict) -> list:
    """``[(kind, owner, mode, path)]`` of PATH_WALK's lines, in the order the walk met them."""
    entries, n = [], 0
    while "walk%d" % n in state:
        kind, owner, mode, path = (state["walk%d" % n].split(":", 3) + ["", "", ""])[:4]
        entries.append((kind, owner, mode, path))
        n += 1
    return entries


def ancestor_problem(state: dict, dest: str):
    """Why a directory above the helper's, or a link on the way there, could let someone else swap
    the helper, or None: a directory owned by another user, or writable by group or others without
    the sticky bit (whoever can write there can rename the helper's directory away and put their own
    in its place); a link owned by another user; something that is not a directory; a walk that did
    not finish. ``state``: PATH_WALK's keys."""
    above = posixpath.dirname(posixpath.dirname(dest))
    end = state.get("walkend")
    if end != "ok":
        return "cannot tell who controls the directories above %s (%s): refusing to install the helper below it" % (
            posixpath.dirname(dest), "more than %d symbolic links on the way" % MAX_LINKS if end == "loop"
            else "the walk of %s did not finish" % above)
    uid = state.get("uid", "0")
    for kind, owner, mode, path in walk_entries(state):
        if kind == "o":
            return "%s is not a directory: refusing to install the helper below it" % path
        if _foreign(owner, uid):
            return "%s%s is owned by uid %s, not by root or the connecting user: its owner could replace the helper " \
                   "that runs as root in every backup; choose another dest or fix its owner" % (
                       "the symbolic link " if kind == "l" else "", path, owner)
        bits = int(mode or "0", 8)
        if kind == "d" and bits & 0o022 and not bits & 0o1000:
            return "%s is writable by group or others (mode %s): they could replace the helper that runs as root " \
                   "in every backup; choose another dest or fix its mode" % (path, mode)
    return None


def helper_dir_problem(state: dict, dest: str):
    """Why the helper's directory or its compiled code could run someone else's code as root, or None.

    ``state``: ``_target_state``'s keys ``uid`` (the connecting user), ``dir`` and ``cache``
    (``link``, ``other`` or ``<owner uid>:<octal mode>``), ``pycs`` (the same, one per compiled file of
    the helper in ``__pycache__``). Python runs a compiled file whose recorded source mtime and size
    match the helper's: whoever can write one runs code in every backup (HELPER_LAUNCHER)."""
    directory = posixpath.dirname(dest)
    cache = posixpath.join(directory, "__pycache__")
    uid = state.get("uid", "0")
    found = [(directory, state.get("dir")), (cache, state.get("cache"))]
    found += [(posixpath.join(cache, posixpath.basename(dest) + "*.pyc"), entry)
              for entry in (state.get("pycs") or "").split()]
    for path, entry in found:
        # the directory's own mode is repaired by the install, not refused
        problem = entry_problem(path, entry, uid, "code put there would run as root in every backup",
                                writable_matters=path != directory)
        if problem:
            return problem
    return None


def entry_problem(path: str, entry, uid: str, harm: str, writable_matters: bool = True):
    """Why ``path`` could let someone else's code in, or None. ``entry`` is ``_entry_shell``'s output
    (``link``, ``other``, ``<owner uid>:<octal mode>``, None when absent); ``harm`` what would follow."""
    if not entry:
        return None
    if entry in ("link", "other"):
        return "%s is %s: %s; remove it by hand" % (
            path, "a symbolic link" if entry == "link" else "not a directory or regular file", harm)
    owner, _sep, mode = entry.partition(":")
    if _foreign(owner, uid):
        return "%s is owned by uid %s, not by root or the connecting user: %s; fix its owner or remove it by hand" % (
            path, owner, harm)
    if writable_matters and int(mode or "0", 8) & 0o022:
        return "%s is writable by group or others (mode %s): %s; fix its mode or remove it by hand" % (path, mode, harm)
    return None


def lib_dir_problem(state: dict, lib_dir: str):
    """Why the helper's private ``lib/pythonX.Y`` could hand it someone else's module, or None.

    The helper puts that directory first on ``sys.path`` whenever it exists (with or without a
    shipped wheel), and imports ``zstandard``, ``ssl`` or ``http.client`` only when it needs them: a
    module planted there runs as root. ``state``: ``libparent`` and ``lib`` (``link``, ``other`` or
    ``<owner uid>:<octal mode>``), ``libbad`` (the first entry below ``lib`` that is a link, someone
    else's, or writable by group or others: ``<uid>:<octal mode>:<find type>:<relative path>``).
    Unlike a directory above the helper, a sticky bit is no excuse here: it stops renames, not new
    files."""
    uid = state.get("uid", "0")
    for path, entry in ((posixpath.dirname(lib_dir), state.get("libparent")), (lib_dir, state.get("lib"))):
        # absent: the wheel's install makes it, owned by the connecting user
        problem = entry_problem(path, entry, uid, "a module planted there would be imported by the helper as root")
        if problem:
            return problem
    owner, _sep, rest = (state.get("libbad") or "").partition(":")
    mode, _sep, rest = rest.partition(":")
    kind, _sep, name = rest.partition(":")
    entry = "link" if kind == "l" else (owner and "%s:%s" % (owner, mode))
    return entry_problem(posixpath.join(lib_dir, name), entry, uid, "the helper would import it as root")


def wheel_swap_names(lib_dir: str, token: str) -> tuple:
    """Where one install unpacks the wheel and parks the old copy: names of its own (``token``), so two
    installs at the same time never unpack into, or move away, each other's half-made copy."""
    return "%s.new-%s" % (lib_dir, token), "%s.old-%s" % (lib_dir, token)


def swap_in_shell(new: str, lib_dir: str, old: str) -> str:
    """Shell that puts the directory ``new`` in place as ``lib_dir``, parking the copy there as ``old``
    and removing it. ``-T``: never into a directory another run put in place meanwhile. When such a
    run moves the lib away or puts its own in place between this one's two renames, this one clears
    what it parked and tries again (WHEEL_SWAP_TRIES) after a pause its PID sets, so two runs fall
    out of step: every copy is whole, the last one in place stays. Giving up removes ``new`` and exits
    with WHEEL_SWAP_LOST."""
    q = shlex.quote
    swap = "{ [ ! -e %s ] || mv -T %s %s; } && mv -T %s %s" % (q(lib_dir), q(lib_dir), q(old), q(new), q(lib_dir))
    give_up = "rm -rf %s; exit %d" % (q(new), WHEEL_SWAP_LOST)
    return ("n=0; until %s; do n=$((n+1)); rm -rf %s; if [ $n -ge %d ]; then %s; fi; sleep 0.$(($$ %% 9 + 1)); done;"
            " rm -rf %s" % (swap, q(old), WHEEL_SWAP_TRIES, give_up, q(old)))


def dir_mode(state: dict):
    """The octal mode of the helper's directory from ``_target_state``'s ``dir``, None when absent."""
    owner_mode = state.get("dir") or ""
    return owner_mode.partition(":")[2] or None


def parse_json_object(stdout: str):
    """The helper's single JSON object (whole stdout, else its last line that parses)."""
    text = (stdout or "").strip()
    candidates = [text] + list(reversed(text.splitlines()))
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def one_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in to_text(text or "").splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return last[-limit:]


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            result.update(self._install(args))
        except AnsibleActionFail as exc:
            result.update(failed=True, msg=to_native(exc.message))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    # ------------------------------------------------------------------ steps
    def _shell(self, cmd: str) -> dict:
        return self._low_level_execute_command(cmd, sudoable=True)

    def _source(self, src):
        if src:
            try:
                return self._find_needle("files", src)
            except AnsibleError as exc:
                raise AnsibleActionFail("helper source %s not found on the controller: %s" % (src, to_native(exc)))
        if not os.path.isfile(BUNDLED_HELPER):
            raise AnsibleActionFail("the collection's helper is missing: %s" % BUNDLED_HELPER)
        return BUNDLED_HELPER

    def _python_version(self, python: str):
        cmd = "%s -c 'import sys; print(sys.version_info[:2])'" % shlex.quote(python)
        res = self._shell(cmd)
        version = parse_python_version(res.get("stdout", ""))
        if res.get("rc") != 0 or version is None:
            if res.get("rc") == 127:
                raise AnsibleActionFail("%s not found on the target; install Python >= 3.6 or set python" % python)
            raise AnsibleActionFail("cannot run %s on the target (rc=%s): %s"
                                    % (python, res.get("rc"), one_line(res.get("stderr") or res.get("stdout"))))
        if version < MIN_PYTHON:
            raise AnsibleActionFail("%s on the target is Python %d.%d; the helper needs Python >= %d.%d"
                                    % ((python,) + version + MIN_PYTHON))
        return version

    def _target_state(self, dest: str, lib_dir: str, python: str) -> dict:
        q_dest = shlex.quote(dest)
        q_marker = shlex.quote(posixpath.join(lib_dir, WHEEL_MARKER))
        cmd = "; ".join([
            "LC_ALL=C; export LC_ALL",
            "echo machine=$(uname -m)",
            "if [ -f %s ]; then echo sha256=$(sha256sum < %s | cut -d' ' -f1); echo mode=$(stat -c %%a %s);"
            " elif [ -e %s ] || [ -L %s ]; then echo kind=other; fi" % (q_dest, q_dest, q_dest, q_dest, q_dest),
            "echo uid=$(id -u)",
            walk_shell(python, posixpath.dirname(posixpath.dirname(dest))),
            "echo dir=%s" % _entry_shell(posixpath.dirname(dest)),
            "echo cache=%s" % _entry_shell(cache_dir_of(dest)),
            # quoted directory and name, the glob outside the quotes
            "echo pycs=$(for f in %s/%s*.pyc; do [ -e \"$f\" ] || [ -L \"$f\" ] || continue; echo %s; done)"
            % (shlex.quote(cache_dir_of(dest)), shlex.quote(posixpath.basename(dest)), _entry_shell("$f", quoted=True)),
            "if [ -f %s ]; then echo wheel=$(cat %s); fi" % (q_marker, q_marker),
            "echo libparent=%s" % _entry_shell(posixpath.dirname(lib_dir)),
            "echo lib=%s" % _entry_shell(lib_dir),
            "echo libbad=%s" % _lib_entries_shell(lib_dir),
            "true",
        ])
        res = self._shell(cmd)
        if res.get("rc") != 0:
            raise AnsibleActionFail("cannot inspect %s on the target: %s" % (dest, one_line(res.get("stderr"))))
        state = parse_keyvalues(res.get("stdout", ""))
        if state.get("kind") == "other":
            raise AnsibleActionFail("%s exists on the target and is not a regular file; remove it or choose another dest"
                                    % dest)
        return state

    def _refuse_foreign_code(self, state: dict, dest: str, lib_dir: str) -> None:
        problem = ancestor_problem(state, dest) or helper_dir_problem(state, dest) or lib_dir_problem(state, lib_dir)
        if problem:
            raise AnsibleActionFail(problem + " (nothing changed)")

    def _check(self, res: dict, what: str) -> None:
        if res.get("rc") != 0:
            detail = one_line(res.get("stderr") or res.get("stdout"))
            raise AnsibleActionFail("%s failed (rc=%s): %s" % (what, res.get("rc"), detail))

    def _stage(self, local: str, name: str) -> str:
        tmpdir = self._connection._shell.tmpdir or self._make_tmp_path()
        remote = self._connection._shell.join_path(tmpdir, name)
        self._connection.put_file(local, remote)
        self._fixup_perms2([tmpdir, remote], execute=False)
        return remote

    def _install_helper(self, src: str, dest: str, want_sha: str) -> None:
        staged = self._stage(src, "xapi-backup-helper")
        dest_dir = posixpath.dirname(dest)
        tmp_dest = posixpath.join(dest_dir, ".%s.%s.tmp" % (posixpath.basename(dest), secrets.token_hex(4)))
        q = shlex.quote
        cmd = " && ".join([
            "umask 022",
            "mkdir -p %s" % q(dest_dir),
            "chmod 0755 %s" % q(dest_dir),
            "cp %s %s" % (q(staged), q(tmp_dest)),
            "chmod 0755 %s" % q(tmp_dest),
            "mv -f %s %s" % (q(tmp_dest), q(dest)),
            # the old helper's compiled code (HELPER_LAUNCHER): Python would take it for the new one
            # if the two had the same size and the same mtime second
            "rm -f -- %s*.pyc" % q(posixpath.join(dest_dir, "__pycache__", posixpath.basename(dest))),
            "sha256sum < %s | cut -d' ' -f1" % q(dest),
        ])
        res = self._shell(cmd + " || { rc=$?; rm -f %s; exit $rc; }" % q(tmp_dest))
        self._check(res, "installing %s" % dest)
        got = res.get("stdout", "").strip().splitlines()[-1:] or [""]
        if got[0] != want_sha:
            raise AnsibleActionFail("%s on the target has sha256 %s after the transfer, expected %s" % (dest, got[0], want_sha))

    def _install_wheel(self, wheel: str, wheel_sha: str, python: str, lib_dir: str) -> None:
        staged = self._stage(wheel, os.path.basename(wheel))
        q = shlex.quote
        new, old = wheel_swap_names(lib_dir, secrets.token_hex(4))
        unpack = " && ".join([
            "umask 022",
            "mkdir -p %s" % q(posixpath.dirname(lib_dir)),
            "mkdir %s" % q(new),
            "%s -I -m zipfile -e %s %s" % (q(python), q(staged), q(new)),
            "echo %s > %s" % (q(wheel_sha), q(posixpath.join(new, WHEEL_MARKER))),
            "chmod -R u+rwX,go+rX,go-w %s" % q(new),
        ])
        res = self._shell("{ %s && { %s; }; } || { rc=$?; rm -rf %s %s; exit $rc; }"
                          % (unpack, swap_in_shell(new, lib_dir, old), q(new), q(old)))
        if res.get("rc") == WHEEL_SWAP_LOST:
            raise AnsibleActionFail("could not put %s in place as %s: other installs ran at the same time %d times over "
                                    "(the copy in place is one of theirs, whole); run again: %s"
                                    % (os.path.basename(wheel), lib_dir, WHEEL_SWAP_TRIES, one_line(res.get("stderr"))))
        self._check(res, "unpacking %s into %s" % (os.path.basename(wheel), lib_dir))

    def _self_test(self, python: str, dest: str) -> dict:
        # started as every task starts it, so the run also leaves the helper's compiled code behind
        res = self._shell(" ".join(shlex.quote(a) for a in launch_argv(python, dest) + ["self-test"]))
        report = parse_json_object(res.get("stdout", ""))
        if report is None:
            raise AnsibleActionFail("helper self-test printed no JSON (rc=%s): %s"
                                    % (res.get("rc"), one_line(res.get("stderr") or res.get("stdout")) or "no output"))
        if res.get("rc") != 0 or report.get("ok") is not True:
            err = report.get("error") if isinstance(report.get("error"), dict) else {}
            raise AnsibleActionFail("helper self-test failed: %s: %s" % (err.get("code", "SELF_TEST_FAILED"),
                                                                         err.get("message", one_line(res.get("stderr")))))
        return report

    # ------------------------------------------------------------------ the decision
    def _install(self, args: dict) -> dict:
        dest, python = args["dest"], args["python"]
        if not posixpath.isabs(dest) or dest.endswith("/"):
            raise AnsibleActionFail("dest must be an absolute file path, got %r" % dest)
        src = self._source(args["src"])
        want_sha = sha256_file(src)
        wheel = args["zstandard_wheel"]
        wheel_sha = None
        if wheel:
            if not os.path.isfile(wheel):
                raise AnsibleActionFail("zstandard_wheel %s does not exist on the controller" % wheel)
            wheel_sha = sha256_file(wheel)

        version = self._python_version(python)
        lib_dir = lib_dir_for(dest, version)
        state = self._target_state(dest, lib_dir, python)
        self._refuse_foreign_code(state, dest, lib_dir)
        if wheel:
            why = wheel_mismatch(os.path.basename(wheel), version, state.get("machine", ""))
            if why:
                raise AnsibleActionFail(why)

        actions = []
        helper_differs = state.get("sha256") != want_sha
        if helper_differs:
            actions.append("install %s (sha256 %s)" % (dest, want_sha[:12]) if "sha256" not in state
                           else "replace %s (sha256 %s -> %s)" % (dest, state["sha256"][:12], want_sha[:12]))
        elif state.get("mode") != "755" or dir_mode(state) != "755":
            actions.append("set mode 0755 on %s and its directory" % dest)
        wheel_differs = bool(wheel) and state.get("wheel") != wheel_sha
        if wheel_differs:
            actions.append("unpack %s into %s" % (os.path.basename(wheel), lib_dir))

        check_mode = self._task.check_mode
        if actions and not check_mode:
            if helper_differs:
                self._install_helper(src, dest, want_sha)
            elif actions:
                q = shlex.quote
                self._check(self._shell("chmod 0755 %s %s" % (q(posixpath.dirname(dest)), q(dest))),
                            "setting the mode of %s" % dest)
            if wheel_differs:
                self._install_wheel(wheel, wheel_sha, python, lib_dir)

        result = {
            "changed": bool(actions),
            "dest": dest,
            "sha256": want_sha,
            "previous_sha256": state.get("sha256"),
            "python_version": "%d.%d" % version,
            "lib_dir": lib_dir,
            "zstandard_wheel": os.path.basename(wheel) if wheel else None,
            "actions": actions,
            "self_test": None,
        }
        if self._task.diff:
            result["diff"] = self._diff(dest, state, want_sha, lib_dir, wheel, wheel_sha)
        if args["self_test"]:
            if check_mode and helper_differs:
                result["msg"] = "check mode: self-test skipped, the helper is not installed yet"
            else:
                result["self_test"] = self._self_test(python, dest)
        return result

    @staticmethod
    def _diff(dest, state, want_sha, lib_dir, wheel, wheel_sha) -> dict:
        before = ["sha256: %s" % state.get("sha256", "(absent)"), "mode: %s" % state.get("mode", "(absent)")]
        after = ["sha256: %s" % want_sha, "mode: 755"]
        if wheel:
            before.append("zstandard wheel sha256: %s" % state.get("wheel", "(absent)"))
            after.append("zstandard wheel sha256: %s" % wheel_sha)
        return {
            "before_header": dest + (" + " + lib_dir if wheel else ""),
            "after_header": dest + (" + " + lib_dir if wheel else ""),
            "before": "\n".join(before) + "\n",
            "after": "\n".join(after) + "\n",
        }
