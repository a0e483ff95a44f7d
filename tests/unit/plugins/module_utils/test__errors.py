# -*- coding: utf-8 -*-
# Copyright (c) 2026, xapi.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The error hierarchy: one root, one conversion into a task result."""

from __future__ import annotations

import pytest

from ansible_collections.xapi.backup.plugins.module_utils import _errors
from ansible_collections.xapi.backup.plugins.module_utils._errors import (
    BackupError,
    MissingLibraryError,
    OptionError,
    failure_result,
)
from ansible_collections.xapi.backup.plugins.module_utils._repository import RepositoryError
from ansible_collections.xapi.backup.plugins.module_utils._xapi import (
    XapiBackupError,
    XapiConnectionError,
    XapiError,
    XapiTimeout,
    XapiUsageError,
)
from ansible_collections.xapi.backup.plugins.plugin_utils._helper_runner import HelperError

SHAPE = {"failed", "changed", "msg", "error"}


@pytest.mark.parametrize("cls", [XapiBackupError, XapiUsageError, RepositoryError, HelperError,
                                 MissingLibraryError, XapiConnectionError, XapiTimeout])
def test_every_collection_error_has_one_root(cls):
    assert issubclass(cls, BackupError)
    exc = cls("two\nlines   here")
    assert exc.message == "two lines here" and str(exc) == "two lines here"
    assert set(exc.as_dict()) == {"code", "message", "params"} and exc.partial == {}


def test_codes_per_class():
    assert XapiTimeout("x").code == "TIMEOUT" and XapiConnectionError("x").code == "CONNECTION_FAILED"
    assert XapiUsageError("x").code == "INVALID_REQUEST" and MissingLibraryError("x").code == "MISSING_LIBRARY"
    assert RepositoryError("x").code == "REPOSITORY_ERROR" and RepositoryError("x", "NOT_FOUND").code == "NOT_FOUND"
    assert HelperError("x").code == "HELPER_FAILED" and HelperError("x", "SR_FULL", {"task": 1}).result == {"task": 1}


def test_missing_xenapi_is_not_a_repository_error():
    exc = MissingLibraryError("the XenAPI Python package is required on the controller")
    assert not isinstance(exc, RepositoryError)
    assert "pip install XenAPI" in failure_result(exc)["msg"]


def test_xapi_error_keeps_method_code_params_and_message():
    exc = XapiError("SR_FULL", [10, 5], "VM.snapshot")
    assert (exc.code, exc.params, exc.method) == ("SR_FULL", ["10", "5"], "VM.snapshot")
    assert exc.as_dict() == {"code": "SR_FULL", "params": ["10", "5"], "message": "VM.snapshot failed: SR_FULL ['10', '5']"}
    assert failure_result(exc)["msg"] == ("XAPI error: VM.snapshot failed: SR_FULL ['10', '5'] "
                                          "(free space on the SR holding the VM's disks)")


def test_partial_result_travels_in_the_exception_and_cannot_hide_the_failure():
    exc = RepositoryError("disk full", "IO_ERROR", partial={"vm_uuid": "u1"})
    exc.add_partial(run_id="r1", vm_uuid="other", failed=False, msg="all good", error=None, changed=True)
    result = failure_result(exc, xapi_calls=[{"method": "x"}])
    assert result["vm_uuid"] == "u1" and result["run_id"] == "r1" and result["xapi_calls"] == [{"method": "x"}]
    assert result["failed"] is True and result["changed"] is False and result["msg"] == "disk full"
    assert result["error"] == {"code": "IO_ERROR", "message": "disk full", "params": []}


def test_unexpected_exception_keeps_its_traceback_and_is_internal():
    result = failure_result(ValueError("bad\nthing"), traceback_text="Traceback...")
    assert result["error"]["code"] == _errors.INTERNAL_ERROR and result["exception"] == "Traceback..."
    assert result["msg"] == "unexpected error: ValueError: bad thing"
    assert "exception" not in failure_result(RepositoryError("x"), traceback_text="Traceback...")


def test_option_error_names_the_option():
    exc = OptionError("poll_interval", "must be between 0.1 and 600, got -1")
    assert exc.option == "poll_interval" and exc.params == ["poll_interval"] and exc.code == "INVALID_OPTION"
    assert failure_result(exc)["msg"].startswith("poll_interval: ")


@pytest.mark.parametrize("exc", [XapiError("X"), XapiTimeout("t"), RepositoryError("r"), HelperError("h"),
                                 MissingLibraryError("m"), OptionError("o", "bad"), KeyError("k")])
def test_every_failure_has_the_same_shape(exc):
    result = failure_result(exc)
    assert SHAPE <= set(result) and set(result["error"]) == {"code", "message", "params"}
    assert "\n" not in result["msg"] and result["msg"]
