"""HTTP data handlers of the simulated xapi (/export, /import, /export_raw_vdi, ...).

Owned by the data-handler developer (see docs/dev/contracts.md section 1).  The simulator core
(`server.py`) routes every request that is not XML-RPC (POST `/`, `/RPC2`) and not a `/_sim/`
path through ``HANDLERS``:

    HANDLERS = {("GET", "/export"): export_handler, ("PUT", "/import"): import_handler, ...}

Matching is longest-prefix on the path (as xapi's radix tree in http_svr.ml); an unknown PUT/POST
path answers 403 Forbidden and an unknown GET path 404 Not Found, as xapi does.

Each handler is called as ``fn(ctx)`` with a ``tests.xapisim.http_context.RequestContext``; read
that class for the full API.  In short:

- ``ctx.method``, ``ctx.path`` (no query), ``ctx.query`` (dict, last value wins), ``ctx.headers``
  (``email.message.Message``), ``ctx.cookies`` (dict), ``ctx.param(name)`` (cookie first, then
  query, like ``Xapi_http.lookup_param_of_req``), ``ctx.rfile``, ``ctx.wfile``, ``ctx.sock``
  (the raw socket), ``ctx.tls`` (bool).
- The handler writes the raw HTTP response itself (status line, headers, body: xapi's framing
  matters).  ``ctx.send_simple(code, reason, body=b"", headers=())`` writes a complete small
  response.  The connection is closed after the handler returns.
- ``ctx.sim``: ``.db`` (tests.xapisim.db.Database), ``.storage`` (tests.xapisim.storage.Storage),
  ``.faults`` (tests.xapisim.faults.Faults), ``.host_ref``, ``.host_record()``, ``.address``,
  ``.is_master``, ``.emulate_release`` / ``.xapi_version`` (pool option), and
  ``.host_url(host_ref, tls=None)`` for 302 redirects to another host of the pool.
- ``ctx.authenticate()`` -> session ref or None (session_id param, then HTTP Basic auth, which
  creates a temporary session that is logged out when the request ends).
- ``ctx.task_for_request(label)`` -> ``TaskHandle`` (uses the ``task_id`` param or creates a task):
  ``.ref``, ``.set_progress(f)``, ``.complete(result_fragment="")``, ``.fail(["CODE", ...])``,
  ``.is_cancelling()``, ``.set_allowed_operations([...])``.
- ``ctx.stream(wfile=None)`` -> a writer around ``wfile`` that applies the fault switches for
  streams (cut_after_bytes, stall_seconds/stall_after_bytes, bandwidth_bytes_per_s), matched on
  ``ctx.path``; raises ``ConnectionCut`` when the cut fires (the socket is then closed abruptly).
- Locking: ``ctx.sim.db.lock_operation(vm_ref, task_ref, "export")`` /
  ``ctx.sim.db.unlock_operation(vm_ref, task_ref)``; raises ``XapiError`` with
  OTHER_OPERATION_IN_PROGRESS.
"""

HANDLERS = {}
