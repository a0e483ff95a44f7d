# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ---------------------------------------------------------------------------------------------
# PRIVATE to the xapi.backup collection. This is not a public API: it may change in any release
# without notice. Modules, action plugins and module_utils of this collection only.
# ---------------------------------------------------------------------------------------------

"""The shared options, declared ONCE: argument spec, documentation, environment fallback and range.

No Ansible imports. ``_common`` builds the argument specs from these tables, ``_options`` takes their
ranges, and the doc fragments ``xapi.backup.connection`` and ``xapi.backup.helper`` are generated from
them by ``tests/tools/render_doc_fragments.py`` (ansible-test needs literal ``DOCUMENTATION`` strings;
a unit test fails when a fragment and this table disagree). So a shared option is added or changed in
one entry here, then the fragments are regenerated.

Entry keys: ``spec`` (argument spec of the option), ``description`` (list of sentences),
``env`` (environment variables read when the task does not set it, first set wins), ``range``
(``(min, max, unit)`` checked before any side effect).

Compatibility with community.general's xenserver modules (their doc fragment
``plugins/doc_fragments/xenserver.py``): the aliases ``pool`` (hostname), ``admin`` (username),
``pass`` and ``pwd`` (password), and the variables ``XENSERVER_HOST``, ``XENSERVER_USER``,
``XENSERVER_PASSWORD`` and ``XENSERVER_VALIDATE_CERTS`` are accepted too.
"""

from __future__ import annotations

import json
import re

from ansible_collections.xapi.backup.plugins.module_utils._constants import (
    DEFAULT_HELPER_PATH,
    DEFAULT_HELPER_PYTHON,
    DEFAULT_HELPER_XAPI_URL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    MAX_PASSWORD_FILE_BYTES,
    MAX_THREADS,
)

#: ``--ionice`` values the helper accepts (its ``parse_ionice``), checked on the controller before any side effect.
IONICE_PATTERN = re.compile(r"^(idle|none|(best-effort|be|realtime|rt)(:[0-7])?)$")

CONNECTION = {
    "hostname": {
        "spec": {"type": "str", "required": True, "aliases": ["host", "pool"]},
        "env": ["XAPI_HOSTNAME", "XENSERVER_HOST"],
        "description": [
            "The pool master (or any pool member; the login follows C(HOST_IS_SLAVE) to the master).",
            "A host name or address, optionally with a port (V(host:8443)) and a scheme.",
            "HTTPS is used unless the value starts with V(http://) explicitly.",
        ],
    },
    "username": {
        "spec": {"type": "str", "default": "root", "aliases": ["user", "admin"]},
        "env": ["XAPI_USERNAME", "XENSERVER_USER"],
        "description": ["The XAPI user to log in as."],
    },
    "password": {
        # not "required" in the spec: O(password_file) may give it instead (_common.resolve_password
        # fails with "missing required arguments: password" when neither is set)
        "spec": {"type": "str", "no_log": True, "aliases": ["pass", "pwd"]},
        "env": ["XAPI_PASSWORD", "XENSERVER_PASSWORD"],
        "description": [
            "The password of O(username). Never logged and never returned.",
            "Required unless O(password_file) is set; when both are set, this one is used.",
        ],
    },
    "password_file": {
        # the path is not a secret (error messages name it); what it holds is treated like O(password)
        "spec": {"type": "path", "no_log": False},
        "env": ["XAPI_PASSWORD_FILE"],
        "description": [
            "A file on the controller that holds the password of O(username) (one line; a final newline is ignored), "
            "read when O(password) is not set.",
            "For AWX: a credential type's C(file) injector writes the password to a file of the job and injects its "
            "path as E(XAPI_PASSWORD_FILE), so the password is in no environment variable of the job (ansible-runner "
            "writes the job's environment into its artifacts). See C(docs/awx.md).",
            "A symbolic link, a file that is not a regular file, an empty file or one larger than %d bytes is refused."
            % MAX_PASSWORD_FILE_BYTES,
        ],
    },
    "validate_certs": {
        "spec": {"type": "bool", "default": True},
        "env": ["XAPI_VALIDATE_CERTS", "XENSERVER_VALIDATE_CERTS"],
        "description": [
            "Verify the TLS certificate of the host against O(ca_path) or the system CA store.",
            "Set to V(false) only for hosts with a self-signed certificate you cannot obtain; prefer O(ca_path).",
        ],
    },
    "ca_path": {
        "spec": {"type": "path"},
        "env": ["XAPI_CA_PATH"],
        "description": [
            "A PEM file (or a directory of hashed PEM files) with the CA certificates that sign the host certificate.",
            "Defaults to the system CA store.",
        ],
    },
    "timeout": {
        "spec": {"type": "int", "default": DEFAULT_TIMEOUT},
        "range": (1, 86400, "seconds for one XML-RPC exchange"),
        "description": [
            "Seconds to wait for the answer to each XAPI call (not for long-running tasks, see the module's own options).",
        ],
    },
}

HELPER = {
    "repository": {
        "spec": {"type": "str", "required": True},
        "description": [
            "Root directory of the backup repository on the host the task runs on (the pool master, or the "
            "controller with a local connection).",
        ],
    },
    "helper_path": {
        "spec": {"type": "str", "default": DEFAULT_HELPER_PATH},
        "description": ["Path of C(xapi-backup-helper) on the host the task runs on."],
    },
    "helper_python": {
        "spec": {"type": "str", "default": DEFAULT_HELPER_PYTHON},
        "description": ["Python interpreter that runs the helper on that host (dom0 has Python 3.6)."],
    },
    "transfer": {
        "spec": {"type": "str", "default": "local", "choices": ["local", "remote"]},
        "description": [
            "V(local) the helper talks to xapi on its own host at O(helper_xapi_url) (plain HTTP over localhost on "
            "the pool master).",
            "V(remote) the helper talks to the pool master named by O(hostname) over HTTPS with certificate verification.",
        ],
    },
    "helper_xapi_url": {
        "spec": {"type": "str", "default": DEFAULT_HELPER_XAPI_URL},
        "description": ["URL at which the helper reaches xapi with O(transfer=local)."],
    },
    "helper_ca_file": {
        "spec": {"type": "str"},
        "description": [
            "CA file on the helper's host used with O(transfer=remote).",
            "Defaults to O(ca_path) when the connection is local, else to the helper host's CA store.",
        ],
    },
    "repository_key": {
        "spec": {"type": "str", "no_log": True},
        "env": ["XAPI_BACKUP_REPOSITORY_KEY"],
        "description": [
            "Secret key that authenticates the backups of the repository (from a vault or an AWX credential; never "
            "stored on the share). The controller signs each new manifest with HMAC-SHA256; restore, verification and "
            "retention then refuse a backup whose signature is missing or wrong (status V(untrusted)): it is never "
            "restored and never removed.",
            "Without a key backups are not authenticated and the result carries a warning.",
            "The key never leaves the controller (not sent to the helper, not in any output).",
        ],
    },
    "poll_interval": {
        "spec": {"type": "float", "default": DEFAULT_POLL_INTERVAL},
        "range": (0.1, 600, "seconds between two status polls"),
        "description": ["Seconds between two status polls of the detached helper."],
    },
}

#: Tuning options vm_export forwards to ``xapi-backup-helper export`` (``helper_flag``); documented by the
#: ``xapi.backup.helper.export`` fragment. A new export option of the helper is ONE entry here (see
#: docs/dev/contracts.md, "Adding a helper option").
EXPORT = {
    "level": {
        "spec": {"type": "raw"},
        "helper_flag": "--level",
        "description": ["Compression level (helper default when not set): 1-19 with V(zstd), 1-9 with V(gzip).",
                        "V(auto) (zstd only): the helper starts at level 3 and raises the level while the repository "
                        "is the bottleneck (a slow NAS, a O(bandwidth_limit)), lowers it when compression becomes the "
                        "bottleneck, as C(zstd --adapt) does; fewer bytes stored in about the same time."],
    },
    "threads": {
        "spec": {"type": "int"},
        "helper_flag": "--threads",
        "range": (0, MAX_THREADS, "compression threads, 0 for the helper's core count"),
        "description": ["Compression threads. Not set: the helper's default, half of the host's cores (at least one), "
                        "to leave dom0 headroom; V(0) uses every core; at most %d." % MAX_THREADS],
    },
    "nice": {
        "spec": {"type": "int"},
        "helper_flag": "--nice",
        "range": (0, 19, "CPU niceness of the helper"),
        "description": ["CPU niceness the helper lowers itself to on dom0 (never raises it). Not set: the helper's "
                        "default 19, as xapi runs its own export compressor; V(0) leaves it unchanged."],
    },
    "ionice": {
        "spec": {"type": "str"},
        "helper_flag": "--ionice",
        "pattern": (IONICE_PATTERN, "idle, none, best-effort[:0-7] or realtime[:0-7]"),
        "description": ["I/O scheduling class of the helper: V(idle), V(best-effort[:LEVEL]), V(realtime[:LEVEL]) "
                        "(LEVEL 0-7) or V(none) (left as it is). Not set: the helper's default V(idle), as xapi's own "
                        "compressor."],
    },
    "bandwidth_limit": {
        "spec": {"type": "int"},
        "helper_flag": "--bandwidth-limit",
        "range": (65536, 1 << 40, "bytes per second written by one export"),
        "description": ["Cap on the bytes per second this export writes into the repository (a token bucket in the "
                        "helper), for a WAN link or a shared NAS. Not set: no cap. The pool_backup role splits its "
                        "per-pool cap across the pool's concurrent exports."],
    },
    "stall_timeout": {
        "spec": {"type": "int"},
        "helper_flag": "--stall-timeout",
        "range": (1, 86400, "seconds without progress before the transfer is abandoned"),
        "description": ["Seconds without data from xapi after which the helper gives up (helper default when not set)."],
    },
}

CONNECTION_REQUIREMENTS = ["XenAPI (Python package, on the controller)"]
CONNECTION_NOTES = [
    "The module runs on the controller and talks XAPI over the network; delegate the task to V(localhost) or run it "
    "in a play on localhost. Nothing runs on dom0.",
    "Every module returns C(xapi_calls), the XAPI calls made or, in check mode, planned.",
    "Compatible with the connection options of community.general's xenserver modules: the aliases O(hostname=pool), "
    "O(username=admin), O(password=pass), O(password=pwd) and the E(XENSERVER_HOST), E(XENSERVER_USER), "
    "E(XENSERVER_PASSWORD), E(XENSERVER_VALIDATE_CERTS) environment variables (the E(XAPI_*) ones win).",
]


def argument_spec(table):
    """``{name: spec}`` of a table (copies: callers may change them)."""
    return dict((name, json.loads(json.dumps(entry["spec"]))) for name, entry in table.items())


def env_vars(table):
    """``{name: [environment variables]}`` of the options that have them."""
    return dict((name, list(entry["env"])) for name, entry in table.items() if entry.get("env"))


def patterns(table):
    """``{name: (compiled regex, what it accepts)}`` of the string options that have a pattern."""
    return dict((name, entry["pattern"]) for name, entry in table.items() if entry.get("pattern"))


def ranges(table):
    """``{name: (min, max, unit)}`` of the options that have a range."""
    return dict((name, entry["range"]) for name, entry in table.items() if entry.get("range"))


def helper_flags(table, params):
    """``["--flag", "value", ...]`` for the options of ``table`` set in ``params`` that the helper takes."""
    args = []
    for name, entry in table.items():
        if entry.get("helper_flag") and params.get(name) is not None:
            args += [entry["helper_flag"], str(params[name])]
    return args


def option_doc(entry):
    """The documentation of one option, from its entry."""
    doc = {"description": list(entry["description"])}
    if entry.get("env"):
        doc["description"].append("If not set, the value of the %s environment variable is used."
                                  % " or the ".join("E(%s)" % name for name in entry["env"]))
    spec = entry["spec"]
    doc["type"] = spec.get("type", "str")
    for key in ("required", "default", "choices", "aliases"):
        if key in spec:
            doc[key] = spec[key]
    return doc


def documentation(table, overrides=None, **extra):
    """The data of a doc fragment's ``DOCUMENTATION`` for ``table`` (``tests/tools/render_doc_fragments.py``
    writes it as YAML into ``plugins/doc_fragments/``; a unit test keeps the files equal to it).

    ``overrides``: ``{name: {key: value}}`` merged into single options (``required: false``...).
    """
    options = dict((name, option_doc(entry)) for name, entry in table.items())
    for name, changes in (overrides or {}).items():
        options[name] = dict(options[name], **changes)
    doc = {"options": options}
    doc.update(extra)
    return doc


_NOT_USED = "Accepted for C(module_defaults) of the action group; not used (this module does not talk to xapi)."


def fragments():
    """``{fragment file: {attribute: documentation data}}`` of the fragments rendered from these tables."""
    no_xapi = dict((name, CONNECTION[name]) for name in ("hostname", "password"))
    return {
        "connection.py": {"DOCUMENTATION": documentation(CONNECTION, requirements=CONNECTION_REQUIREMENTS,
                                                         notes=CONNECTION_NOTES)},
        "helper.py": {
            "DOCUMENTATION": documentation(HELPER),
            "EXPORT": documentation(EXPORT),
            "NO_XAPI": documentation(
                no_xapi,
                overrides=dict((name, {"required": False, "description": [_NOT_USED] + option_doc(entry)["description"][-1:]})
                               for name, entry in no_xapi.items()),
                notes=[
                    "The connection options (O(hostname), O(password), ...) are accepted so that C(module_defaults) for the "
                    "C(group/xapi.backup.xapi) action group apply; this module does not talk to xapi and ignores them, as it "
                    "ignores O(transfer), O(helper_xapi_url), O(helper_ca_file) and O(poll_interval).",
                ],
            ),
        },
    }
