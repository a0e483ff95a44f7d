# -*- coding: utf-8 -*-
# Copyright (c) xapi.backup maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Small XAPI reads and helper arguments shared by the data verbs.

PRIVATE to the collection: not a public API.
"""

from __future__ import annotations

from ansible_collections.xapi.backup.plugins.module_utils._constants import DEFAULT_HELPER_XAPI_URL, VERSION
from ansible_collections.xapi.backup.plugins.module_utils._repository import is_uuid
from ansible_collections.xapi.backup.plugins.module_utils._selection import summarise_pool
from ansible_collections.xapi.backup.plugins.module_utils._xapi import XapiError, XapiUsageError

#: Written into every manifest (``tool_version``): the collection version.
TOOL_VERSION = VERSION


def pool_facts(xapi) -> dict:
    """``{uuid, name, master_ref, xapi_version}`` of the pool the session is logged in to."""
    pools = xapi.call("pool.get_all_records")
    if not pools:
        raise XapiUsageError("xapi reports no pool object")
    pool_ref = sorted(pools)[0]
    master_ref = pools[pool_ref].get("master")
    host = xapi.call("host.get_record", master_ref)
    summary = summarise_pool(pools, {master_ref: host})
    software = host.get("software_version") or {}
    return {
        "uuid": summary.get("uuid"),
        "name": summary.get("name_label"),
        "master_ref": master_ref,
        "default_sr": summary.get("default_sr"),
        "xapi_version": software.get("xapi") or software.get("product_version"),
    }


def helper_xapi_args(params: dict, xapi_url: str, connection_is_local: bool) -> list:
    """``--url`` (and TLS options) the helper uses to reach xapi, per ``transfer``.

    ``local``: the helper reads xapi on its own host at ``helper_xapi_url`` (default http://localhost).
    ``remote``: the helper pulls from the pool master over HTTPS with certificate verification; the CA
    file must exist on the helper's host (``helper_ca_file``, else ``ca_path`` on a local connection).
    """
    if params.get("transfer", "local") == "local":
        return ["--url", params.get("helper_xapi_url") or DEFAULT_HELPER_XAPI_URL]
    args = ["--url", xapi_url]
    if not params.get("validate_certs", True):
        return args + ["--insecure"]
    ca_file = params.get("helper_ca_file") or (params.get("ca_path") if connection_is_local else None)
    if ca_file:
        args += ["--ca-file", ca_file]
    return args


def redirect_host_args(xapi) -> list:
    """``--allow-redirect-host ADDRESS`` for every host of the pool: xapi answers an export or an
    import with a 302 to the host that sees the SR, and the helper follows a redirect (which
    carries the session) only to these hosts."""
    records = xapi.call("host.get_all_records") or {}
    addresses = sorted(set(str(r.get("address")) for r in records.values() if isinstance(r, dict) and r.get("address")))
    args = []
    for address in addresses:
        args += ["--allow-redirect-host", address]
    return args


def refs_by_uuid_or_name(xapi, cls, text):
    """Refs of the ``cls`` objects ``text`` names: ``[ref]`` when it is the uuid of one, else those
    whose ``name_label`` is exactly ``text`` (none, one or several)."""
    if is_uuid(text):
        try:
            ref = xapi.call(cls + ".get_by_uuid", text.lower())
        except XapiError as exc:
            if exc.code not in ("UUID_INVALID", "HANDLE_INVALID"):
                raise
            ref = None
        if ref is not None:
            return [ref]
    return xapi.call(cls + ".get_by_name_label", text) or []


def find_sr(xapi, sr):
    """``(ref, record)`` of the SR given by uuid or exact name; None gives the pool's default SR."""
    if not sr:
        return None, None
    refs = refs_by_uuid_or_name(xapi, "SR", sr)
    if not refs:
        raise XapiUsageError("no SR with uuid or name %r" % sr)
    if len(refs) > 1:
        raise XapiUsageError("%d SRs are named %r; give the uuid instead" % (len(refs), sr))
    return refs[0], xapi.call("SR.get_record", refs[0])
