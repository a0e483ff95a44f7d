# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ---------------------------------------------------------------------------------------------
# PRIVATE to the xapi.backup collection. This is not a public API: it may change in any release
# without notice. Modules, action plugins and module_utils of this collection only.
# ---------------------------------------------------------------------------------------------

"""Ansible glue: the argument specs and the ONE place where errors become ``fail_json``.

Modules::

    def run(module, xapi):              # module: AnsibleModule, xapi: _xapi.XapiSession
        ...
        return {"changed": True, "msg": reason, "diff": {...}}

    def main():
        AnsibleXapiModule(argument_spec=dict(vm=dict(type="str", required=True)),
                          supports_check_mode=True).run(run)

Action plugins (documented by the stubs in ``plugins/modules``) build their argument spec with
``helper_argument_spec(options)``: the connection options, the repository and helper options, then their own.
``connection_from_params(self._task.args)`` gives the ``XapiConnection``;
``error_to_message(exc)`` gives the one-line message for any ``XapiBackupError``; ``error_details(exc)``
the ``error`` dict (``code``, ``params``) the modules return on failure.
"""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.xapi.backup.plugins.module_utils._xapi import (
    HAS_XENAPI,
    XENAPI_IMPORT_ERROR,
    CallRecorder,
    XapiBackupError,
    XapiConnection,
    XapiConnectionError,
    XapiError,
    XapiTimeout,
    XapiUsageError,
    one_line,
)

#: Option names of the connection (also the keys action plugins must not forward to the helper).
CONNECTION_OPTIONS = ("hostname", "username", "password", "validate_certs", "ca_path", "timeout")

# Short hints for the error codes a user can act on.
_HINTS = {
    "SESSION_AUTHENTICATION_FAILED": "check username and password",
    "HOST_IS_SLAVE": "point hostname at the pool master",
    "RBAC_PERMISSION_DENIED": "the user lacks the XAPI role for this call",
    "SR_FULL": "free space on the SR holding the VM's disks",
    "OPERATION_BLOCKED": "the VM's blocked_operations forbid this",
    "OTHER_OPERATION_IN_PROGRESS": "retry when the running operation has finished",
}


def xapi_argument_spec():
    """The connection options, documented by the ``xapi.backup.connection`` doc fragment."""
    return dict(
        hostname=dict(type="str", required=True, aliases=["host"], fallback=(env_fallback, ["XAPI_HOSTNAME"])),
        username=dict(type="str", default="root", aliases=["user"], fallback=(env_fallback, ["XAPI_USERNAME"])),
        password=dict(type="str", required=True, no_log=True, fallback=(env_fallback, ["XAPI_PASSWORD"])),
        validate_certs=dict(type="bool", default=True, fallback=(env_fallback, ["XAPI_VALIDATE_CERTS"])),
        ca_path=dict(type="path", fallback=(env_fallback, ["XAPI_CA_PATH"])),
        timeout=dict(type="int", default=60),
    )


#: Defaults of the helper options, also used when a task passes an empty value.
DEFAULT_HELPER_PATH = "/opt/xapi-backup/bin/xapi-backup-helper"
DEFAULT_HELPER_PYTHON = "python3"
DEFAULT_HELPER_XAPI_URL = "http://localhost"


def helper_argument_spec(options=None, uses_xapi=True):
    """Argument spec of a verb that runs ``xapi-backup-helper`` (an action plugin), shared with its doc stub.

    The connection options (``xapi.backup.connection`` doc fragment), the repository and helper options
    (``xapi.backup.helper``), then the verb's own ``options``. With ``uses_xapi=False`` (fragment
    ``xapi.backup.helper.no_xapi``) hostname and password are accepted, for ``module_defaults`` of the
    action group, but not required.
    """
    spec = xapi_argument_spec()
    if not uses_xapi:
        for name in ("hostname", "password"):
            spec[name] = dict(spec[name], required=False)
    spec.update(
        repository=dict(type="str", required=True),
        helper_path=dict(type="str", default=DEFAULT_HELPER_PATH),
        helper_python=dict(type="str", default=DEFAULT_HELPER_PYTHON),
        # how the helper reaches xapi for data transfers (docs/dev/contracts.md section 3b)
        transfer=dict(type="str", default="local", choices=["local", "remote"]),
        helper_xapi_url=dict(type="str", default=DEFAULT_HELPER_XAPI_URL),
        helper_ca_file=dict(type="str"),
        poll_interval=dict(type="float", default=2.0),
        # signs/authenticates manifests on the controller (docs/dev/contracts.md section 4); never sent anywhere
        repository_key=dict(type="str", no_log=True),
    )
    spec.update(options or {})
    return spec


def documentation_stub_main(name, argument_spec, validation):
    """``main()`` of an action plugin's doc stub in ``plugins/modules``: validates like the action, then fails
    (the verb runs as the action plugin ``xapi.backup.<name>``; the stub only documents it)."""
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **validation)
    module.fail_json(msg="xapi.backup.%s runs as an action plugin; this file only documents it" % name)


def connection_from_params(params):
    """``XapiConnection`` from module or action-plugin parameters (keys of ``xapi_argument_spec``)."""
    return XapiConnection(
        hostname=params["hostname"],
        username=params.get("username") or "root",
        password=params.get("password"),
        validate_certs=params.get("validate_certs", True),
        ca_path=params.get("ca_path"),
        timeout=params.get("timeout") or 60,
    )


def error_to_message(exc):
    """One-line, secret-free message for a collection error (any other exception: type and text)."""
    if isinstance(exc, XapiError):
        hint = _HINTS.get(exc.code)
        return one_line("XAPI error: %s%s" % (exc, " (%s)" % hint if hint else ""))
    if isinstance(exc, XapiTimeout):
        return one_line("XAPI timeout: %s" % exc)
    if isinstance(exc, XapiConnectionError):
        return one_line("XAPI connection failed: %s" % exc)
    if isinstance(exc, XapiUsageError):
        return one_line(str(exc))
    return one_line("%s: %s" % (type(exc).__name__, exc))


def error_details(exc):
    """``{"code": ..., "params": [...]}`` for the ``error`` return key of a failed task."""
    if isinstance(exc, XapiError):
        return {"code": exc.code, "params": list(exc.params)}
    codes = {XapiTimeout: "TIMEOUT", XapiConnectionError: "CONNECTION_FAILED", XapiUsageError: "INVALID_REQUEST"}
    for cls, code in codes.items():
        if isinstance(exc, cls):
            return {"code": code, "params": []}
    return {"code": "INTERNAL_ERROR", "params": []}


class AnsibleXapiModule:
    """An ``AnsibleModule`` with the connection options, whose :meth:`run` owns error handling.

    ``argument_spec`` is merged over :func:`xapi_argument_spec`; other keyword arguments go to
    ``AnsibleModule`` unchanged.
    """

    def __init__(self, argument_spec=None, **kwargs):
        spec = xapi_argument_spec()
        spec.update(argument_spec or {})
        self.module = AnsibleModule(argument_spec=spec, **kwargs)
        self.params = self.module.params
        self.check_mode = self.module.check_mode

    def run(self, runner):
        """Log in, call ``runner(module, xapi)``, log out, then ``exit_json`` with its result dict.

        Adds ``xapi_calls`` (made or planned) to the result, on failure too, and drops ``diff``
        unless the task runs in diff mode. Every collection error becomes ONE ``fail_json`` here.
        """
        if not HAS_XENAPI:
            self.module.fail_json(msg=missing_required_lib("XenAPI"), exception=XENAPI_IMPORT_ERROR)
        recorder = CallRecorder()
        try:
            connection = connection_from_params(self.params)
            with connection.session(check_mode=self.check_mode, recorder=recorder) as xapi:
                result = runner(self.module, xapi)
        except XapiBackupError as exc:
            self.module.fail_json(msg=error_to_message(exc), error=error_details(exc), xapi_calls=recorder.calls)
        except Exception as exc:  # pylint: disable=broad-except  # the single last-resort catch, with traceback
            self.module.fail_json(
                msg="unexpected error: %s" % error_to_message(exc),
                exception=traceback.format_exc(),
                xapi_calls=recorder.calls,
            )
        result = dict(result)
        result.setdefault("changed", False)
        if not self.module._diff:
            result.pop("diff", None)
        result["xapi_calls"] = recorder.calls
        self.module.exit_json(**result)
