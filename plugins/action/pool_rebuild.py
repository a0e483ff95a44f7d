# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of xapi.backup.pool_rebuild (documented in plugins/modules/pool_rebuild.py)."""

from __future__ import annotations

import subprocess

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.xapi.backup.plugins.module_utils._errors import InvalidArguments
from ansible_collections.xapi.backup.plugins.modules import vm_import
from ansible_collections.xapi.backup.plugins.modules.pool_rebuild import VALIDATION, argument_spec
from ansible_collections.xapi.backup.plugins.plugin_utils._action import XapiBackupAction
from ansible_collections.xapi.backup.plugins.plugin_utils._pool_rebuild import PoolRebuild
from ansible_collections.xapi.backup.plugins.plugin_utils._vm_import import ImportBatch, VmImport


def validate_import(params: dict) -> dict:
    """One VM's vm_import options checked by vm_import's own argument spec (its defaults filled in)."""
    result = ArgumentSpecValidator(vm_import.argument_spec(), **vm_import.VALIDATION).validate(params)
    if result.error_messages:
        raise InvalidArguments("vms: %s" % "; ".join(result.error_messages))
    return dict(result.validated_parameters, password=params.get("password"))


def run_locally(cmd, in_data):
    """The helper on the controller, from one import's thread (``_low_level_execute_command``'s result shape).

    Each run is its own session, as each Ansible worker process is (they call setsid): with the kernel's
    autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``) CPU time is shared per session, so N
    imports started from the ONE worker of this task would otherwise get the CPU share of one import on a
    busy controller, where the N worker processes of N import tasks got N shares."""
    proc = subprocess.run(cmd, shell=True, input=in_data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
                          start_new_session=True)
    return {"rc": proc.returncode, "stdout": proc.stdout.decode("utf-8", "replace"),
            "stderr": proc.stderr.decode("utf-8", "replace")}


class ActionModule(XapiBackupAction):
    ARGUMENT_SPEC = staticmethod(argument_spec)
    VALIDATION = VALIDATION

    def _execute_helper(self, cmd, in_data):
        if self._local_threads:
            return run_locally(cmd, in_data)
        return super()._execute_helper(cmd, in_data)

    _local_threads = False

    def execute(self, ctx):
        contexts = []
        self._local_threads = ctx.connection_is_local

        def derive(params):
            one = self.context(params)
            contexts.append(one)
            return one

        # one listing of the source pool for every import; on the controller each import runs in the
        # foreground of its slot's thread (the slot is free the moment the helper exits, no status poll)
        batch = ImportBatch(foreground=ctx.connection_is_local)
        try:
            return PoolRebuild(ctx, derive, lambda one: VmImport(one, batch), validate_import).run()
        finally:
            # every call of every import, after the task's own: the task returns the calls it made
            for one in contexts:
                ctx.recorder.calls.extend(one.recorder.calls)
                ctx.runner.calls.extend(one.runner.calls)
