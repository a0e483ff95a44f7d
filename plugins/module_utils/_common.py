# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# ---------------------------------------------------------------------------------------------
# PRIVATE to the xapi.backup collection. This is not a public API: it may change in any release
# without notice. Modules, action plugins and module_utils of this collection only.
# ---------------------------------------------------------------------------------------------

"""Ansible glue: the argument specs, and ``fail_json`` of any error through ``_errors.failure_result``.

Modules::

    def run(module, xapi):              # module: AnsibleModule, xapi: _xapi.XapiSession
        ...
        return {"changed": True, "msg": reason, "diff": {...}}

    def main():
        AnsibleXapiModule(argument_spec=dict(vm=dict(type="str", required=True)),
                          supports_check_mode=True).run(run)

Action plugins (documented by the stubs in ``plugins/modules``) build their argument spec with
``helper_argument_spec(options)``: the connection options, the repository and helper options, then their own.
``connection_from_params(self._task.args)`` gives the ``XapiConnection``. Errors become a failed result
in ``_errors.failure_result`` only (called here for modules and in ``_action`` for action plugins).
"""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.xapi.backup.plugins.module_utils._constants import DEFAULT_TIMEOUT
from ansible_collections.xapi.backup.plugins.module_utils._errors import InvalidArguments, MissingLibraryError, failure_result
from ansible_collections.xapi.backup.plugins.module_utils._option_specs import CONNECTION, HELPER, argument_spec, env_vars
from ansible_collections.xapi.backup.plugins.module_utils._options import check_option_ranges, read_password_file
from ansible_collections.xapi.backup.plugins.module_utils._xapi import HAS_XENAPI, CallRecorder, XapiConnection

#: Option names of the connection (also the keys action plugins must not forward to the helper).
CONNECTION_OPTIONS = tuple(CONNECTION)


def _with_env(spec, table):
    for name, variables in env_vars(table).items():
        spec[name]["fallback"] = (env_fallback, variables)
    return spec


def xapi_argument_spec():
    """The connection options (``_option_specs.CONNECTION``, documented by the ``xapi.backup.connection`` fragment)."""
    return _with_env(argument_spec(CONNECTION), CONNECTION)


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
    spec.update(_with_env(argument_spec(HELPER), HELPER))
    spec.update(options or {})
    return spec


def documentation_stub_main(name, argument_spec, validation):
    """``main()`` of an action plugin's doc stub in ``plugins/modules``: validates like the action, then fails
    (the verb runs as the action plugin ``xapi.backup.<name>``; the stub only documents it)."""
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **validation)
    module.fail_json(msg="xapi.backup.%s runs as an action plugin; this file only documents it" % name)


def resolve_password(params):
    """The XAPI password of the task: O(password) (or its environment variables), else the content of
    O(password_file) (or E(XAPI_PASSWORD_FILE)); neither is the argument spec's usual one-line error."""
    if params.get("password"):
        return params["password"]
    if params.get("password_file"):
        return read_password_file(params["password_file"])
    raise InvalidArguments("missing required arguments: password (or password_file, or XAPI_PASSWORD_FILE in the environment)")


def connection_from_params(params):
    """``XapiConnection`` from module or action-plugin parameters (keys of ``xapi_argument_spec``)."""
    return XapiConnection(
        hostname=params["hostname"],
        username=params.get("username") or "root",
        password=resolve_password(params),
        validate_certs=params.get("validate_certs", True),
        ca_path=params.get("ca_path"),
        timeout=params.get("timeout") or DEFAULT_TIMEOUT,
    )


class _ValidatingModule(AnsibleModule):
    """``AnsibleModule`` whose own argument-spec failures (raised while it is constructed) carry the same
    result shape as every other failure: ``error`` with code ``INVALID_OPTION`` and ``xapi_calls``."""

    def __init__(self, *args, **kwargs):
        self._constructing = True
        super().__init__(*args, **kwargs)
        self._constructing = False

    def fail_json(self, msg, **kwargs):
        if getattr(self, "_constructing", False) and "error" not in kwargs:
            kwargs = dict(failure_result(InvalidArguments(msg)), **kwargs)
            kwargs.pop("msg", None)
            kwargs.pop("failed", None)
            kwargs.setdefault("xapi_calls", [])
        super().fail_json(msg=msg, **kwargs)


class AnsibleXapiModule:
    """An ``AnsibleModule`` with the connection options, whose :meth:`run` owns error handling.

    ``argument_spec`` is merged over :func:`xapi_argument_spec`; other keyword arguments go to
    ``AnsibleModule`` unchanged.
    """

    def __init__(self, argument_spec=None, **kwargs):
        spec = xapi_argument_spec()
        spec.update(argument_spec or {})
        self.module = _ValidatingModule(argument_spec=spec, **kwargs)
        self.params = self.module.params
        self.check_mode = self.module.check_mode

    def run(self, runner):
        """Log in, call ``runner(module, xapi)``, log out, then ``exit_json`` with its result dict.

        Adds ``xapi_calls`` (made or planned) to the result, on failure too, and drops ``diff``
        unless the task runs in diff mode. Every collection error becomes ONE ``fail_json`` here.
        """
        recorder = CallRecorder()
        try:
            check_option_ranges(self.params)  # before any side effect, like the action plugins
            if not HAS_XENAPI:
                raise MissingLibraryError("the XenAPI Python package is required on the controller")
            password = resolve_password(self.params)
            self.module.no_log_values.add(password)  # read from password_file: the spec's no_log never saw it
            connection = connection_from_params(dict(self.params, password=password))
            with connection.session(check_mode=self.check_mode, recorder=recorder) as xapi:
                result = runner(self.module, xapi)
        except Exception as exc:  # pylint: disable=broad-except  # _errors.failure_result: the one conversion
            self.module.fail_json(**failure_result(exc, traceback.format_exc(), xapi_calls=recorder.calls))
        result = dict(result)
        result.setdefault("changed", False)
        if not self.module._diff:
            result.pop("diff", None)
        result["xapi_calls"] = recorder.calls
        self.module.exit_json(**result)
