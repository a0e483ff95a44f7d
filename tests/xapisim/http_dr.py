"""Disaster-recovery data handlers: ``PUT /pool/xmldbdump`` (pool database restore) and
``PUT /import_metadata`` (VM metadata import onto storage that survived).

Follows xapi's sources (xapi-project/xen-api):
- ocaml/xapi/pool_db_backup.ml ``push_database_restore_handler``, ``restore_from_xml``,
  ``prepare_database_for_restore``, ``version_check``; ocaml/xapi/xapi.ml (a restore file found at
  start is the database xapi starts on); dbsync_master.ml ``reset_vms_running_on_missing_hosts``.
- ocaml/xapi/import.ml ``metadata_handler`` and the SR / VDI / VM handlers' Metadata_import
  branches (SR by uuid; VDI through the ``vdi:`` map, else by (SR, location); dry runs only
  fill the lookup table).

Simulator options: ``db_restore_fuse_time`` (seconds between a real restore and the restart,
xapi's Constants.db_restore_fuse_time = 30) and ``db_restore_restart_seconds`` (how long the
restarting xapi answers nothing, default 1).
"""

import json
import os
import threading
import time
import traceback
from xml.etree import ElementTree

from tests.xapisim import ocaml_xmlrpc, ops, xva
from tests.xapisim.errors import XapiError
from tests.xapisim.http_handlers import (NO_CACHE, CONTENT_TYPE, SCHEMA_MAJOR, SCHEMA_MINOR,
                                         _Importer, _authenticate_or_401, _failure_info,
                                         _write_head)
from tests.xapisim.schema import CLASSES, ENUM_DEFAULTS, NOT_PERSISTED, NULL_REF, RELATIONS

RESTORE_FILE = "restore_db.json"  # xapi: /var/lib/xcp/restore_db.db
MAX_DB_BYTES = 256 * 1024 * 1024
DEFAULT_FUSE_S = 30.0
DEFAULT_RESTART_S = 1.0


# ----------------------------------------------------------------------------- database XML

_UNPROTECT = {".": " ", "t": "\t", "n": "\n", "r": "\r", "%": "%"}


def _unprotect_spaces(text):
    """Inverse of Xml_spaces.protect (%. %t %n %r %%)."""
    if "%" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%" and i + 1 < len(text) and text[i + 1] in _UNPROTECT:
            out.append(_UNPROTECT[text[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _parse_sexpr(text):
    """The S-expressions xapi stores sets and maps as: ('a' 'b') and (('k' 'v') ...)."""
    pos = 0

    def skip_spaces():
        nonlocal pos
        while pos < len(text) and text[pos] in " \t\n\r":
            pos += 1

    def parse():
        nonlocal pos
        skip_spaces()
        if pos >= len(text):
            raise ValueError("unexpected end of S-expression")
        if text[pos] == "(":
            pos += 1
            items = []
            while True:
                skip_spaces()
                if pos >= len(text):
                    raise ValueError("unclosed S-expression")
                if text[pos] == ")":
                    pos += 1
                    return items
                items.append(parse())
        if text[pos] == "'":
            pos += 1
            out = []
            while pos < len(text) and text[pos] != "'":
                if text[pos] == "\\" and pos + 1 < len(text):
                    pos += 1
                out.append(text[pos])
                pos += 1
            if pos >= len(text):
                raise ValueError("unterminated string in S-expression")
            pos += 1
            return "".join(out)
        start = pos
        while pos < len(text) and text[pos] not in " \t\n\r()":
            pos += 1
        return text[start:pos]

    value = parse()
    skip_spaces()
    if pos != len(text):
        raise ValueError("trailing data after S-expression")
    return value


def _field_name(column):
    return "name_" + column[len("name__"):] if column.startswith("name__") else column


def _typed(field, text):
    kind = field.kind
    if kind == "i":
        return int(text)
    if kind == "f":
        return float(text)
    if kind == "b":
        return text == "true"
    if kind in ("S", "R"):
        return [str(v) for v in _parse_sexpr(text)]
    if kind == "m":
        return {str(pair[0]): str(pair[1]) for pair in _parse_sexpr(text)}
    return text


def _default_record(cls):
    record = {name: field.default() for name, field in CLASSES[cls].items()}
    record.update(json.loads(json.dumps(ENUM_DEFAULTS.get(cls, {}))))
    return record


def parse_database_xml(data):
    """Db_xml.From: ``(manifest, tables)``; tables and fields this simulator does not model are
    left out, fields missing from a row take their defaults (Db_upgrade fills new fields)."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise XapiError("INTERNAL_ERROR", "Xmlm.Error(%s)" % exc) from None
    if root.tag != "database":
        raise XapiError("INTERNAL_ERROR", "Db_xml.Unmarshall_error(expected <database>)")
    manifest = {}
    tables = {cls: {} for cls in CLASSES if cls not in NOT_PERSISTED}
    for element in root:
        if element.tag == "manifest":
            for pair in element.findall("pair"):
                manifest[pair.get("key")] = pair.get("value")
        elif element.tag == "table":
            cls = element.get("name")
            if cls not in tables:
                continue
            for row in element.findall("row"):
                ref = row.get("ref")
                record = _default_record(cls)
                for column, value in row.attrib.items():
                    name = _field_name(column)
                    if column == "ref" or name not in CLASSES[cls]:
                        continue
                    try:
                        record[name] = _typed(CLASSES[cls][name], _unprotect_spaces(value))
                    except (ValueError, IndexError, TypeError) as exc:
                        raise XapiError("INTERNAL_ERROR", "Db_xml: %s.%s: %s" % (cls, name, exc)) \
                            from None
                tables[cls][ref] = record
    return manifest, tables


def version_check(manifest):
    """pool_db_backup.ml version_check: the schema (major, minor) must equal ours."""
    try:
        major = int(manifest.get("schema_major_vsn"))
        minor = int(manifest.get("schema_minor_vsn"))
    except (TypeError, ValueError):
        raise XapiError("INTERNAL_ERROR", "Db_xml: no schema version in the manifest") from None
    if (major, minor) != (SCHEMA_MAJOR, SCHEMA_MINOR):
        raise XapiError("RESTORE_INCOMPATIBLE_VERSION")


# ----------------------------------------------------------------------------- restore


def _restored_master(tables):
    pools = list(tables["pool"].values())
    if not pools or pools[0]["master"] not in tables["host"]:
        raise XapiError("INTERNAL_ERROR", "Helpers.get_master: no pool master in the backup")
    return pools[0]["master"]


def _remove_pif(tables, pif_ref):
    pif = tables["PIF"].pop(pif_ref)
    network = tables["network"].get(pif["network"])
    if network is not None and pif_ref in network["PIFs"]:
        network["PIFs"].remove(pif_ref)


def _pifs_of(tables, host_ref):
    """Host.get_PIFs: the host's PIFs set, plus rows naming the host that the set lacks."""
    listed = [p for p in tables["host"][host_ref]["PIFs"] if p in tables["PIF"]]
    extra = [ref for ref, pif in tables["PIF"].items()
             if pif["host"] == host_ref and ref not in listed]
    return listed + extra


def prepare_database_for_restore(db, local_host, tables):
    """Only the backup's master survives; it takes this host's uuid and dom0 uuid; its PIFs'
    MACs are remapped by device name and the management flag follows this host's."""
    master = _restored_master(tables)
    for host_ref in [h for h in tables["host"] if h != master]:
        for pif_ref in _pifs_of(tables, host_ref):
            _remove_pif(tables, pif_ref)
        del tables["host"][host_ref]
    tables["host"][master]["uuid"] = db.get_field("host", local_host, "uuid")
    dom0 = tables["host"][master]["control_domain"]
    local_dom0 = db.get_field("host", local_host, "control_domain")
    if dom0 in tables["VM"] and db.exists("VM", local_dom0):
        tables["VM"][dom0]["uuid"] = db.get_field("VM", local_dom0, "uuid")
    local_pifs = [db.get("PIF", ref) for ref in db.records("PIF")
                  if db.get_field("PIF", ref, "host") == local_host]
    device_to_mac = {pif["device"]: pif["MAC"] for pif in local_pifs if pif["physical"]}
    managements = [pif["device"] for pif in local_pifs if pif["management"]]
    mgmt_dev = managements[0] if len(managements) == 1 else None
    found_mgmt = False
    in_backup = []
    for pif_ref in _pifs_of(tables, master):
        pif = tables["PIF"][pif_ref]
        device = pif["device"]
        in_backup.insert(0, device)  # xapi prepends: the error lists them newest first
        pif["management"] = device == mgmt_dev
        found_mgmt = found_mgmt or pif["management"]
        if pif["physical"]:
            if device not in device_to_mac:
                raise XapiError("RESTORE_TARGET_MISSING_DEVICE", device)
            pif["MAC"] = device_to_mac[device]
    if not found_mgmt and mgmt_dev is not None:
        raise XapiError("RESTORE_TARGET_MGMT_IF_NOT_IN_BACKUP", *in_backup)
    return tables


def _read_body(ctx, length):
    chunks = []
    remaining = length
    while remaining > 0:
        chunk = ctx.rfile.read(min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def restore_database_handler(ctx):
    """pool_db_backup.ml push_database_restore_handler."""
    if _authenticate_or_401(ctx, "pool.restore_database") is None:
        return
    task = ctx.task_for_request("Reading database as XML")
    length = ctx.headers.get("Content-Length")
    if length is None:
        _write_head(ctx, ["HTTP/1.1 400 Bad Request", "Connection: close", NO_CACHE,
                          "Content-Length: 0"])
        return task.complete("")
    _write_head(ctx, ["HTTP/1.1 200 OK", "Connection: close", NO_CACHE])
    dry_run = ctx.query.get("dry_run") == "true"
    sim = ctx.sim.sim
    restore_path = os.path.join(sim.state_dir, RESTORE_FILE)
    try:
        length = int(length)
        if length < 0 or length > MAX_DB_BYTES:
            raise XapiError("INTERNAL_ERROR", "database dump of %d bytes refused" % length)
        body = _read_body(ctx, length)
        _unlink_safe(restore_path)  # xapi unlinks the pending restore first, dry run or not
        manifest, tables = parse_database_xml(body)
        version_check(manifest)
        prepare_database_for_restore(ctx.sim.db, ctx.sim.host_ref, tables)
        if not dry_run:
            _write_restore_file(restore_path, tables)
    except XapiError as error:
        return task.fail(error.description)
    except Exception as exc:  # the task fails as with_context turns an exception into one
        traceback.print_exc()
        return task.fail(_failure_info(exc, task.ref))
    task.complete("")
    if not dry_run:
        _light_fuse(sim, ctx.sim.host_ref)


def _unlink_safe(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_restore_file(path, tables):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"tables": tables}, f)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the restart

_FUSE_LOCK = threading.Lock()


def _light_fuse(sim, receiving_host):
    """Xapi_fuse.light_fuse_and_reboot: after the fuse, xapi restarts (here: every listener
    closes, the database is swapped, the receiving host listens again as the master)."""
    fuse = float(sim.options.get("db_restore_fuse_time", DEFAULT_FUSE_S))
    timer = threading.Timer(fuse, _restart, args=(sim, receiving_host))
    timer.daemon = True
    timer.start()


def _restart(sim, receiving_host):
    with _FUSE_LOCK:
        if receiving_host not in sim.listeners:  # another fuse already restarted this xapi
            return
        try:
            _restart_locked(sim, receiving_host)
        except Exception:
            traceback.print_exc()


def _restart_locked(sim, receiving_host):
    servers = sim.listeners[receiving_host]
    address = servers["http"].server_address[0]
    ports = {kind: server.server_address[1] for kind, server in servers.items()}
    tls_context = servers["https"].tls_context
    for host_servers in list(sim.listeners.values()):  # xapi (and the dead members) go away
        for server in host_servers.values():
            server.shutdown()
            server.server_close()
    sim.listeners = {}
    restore_path = os.path.join(sim.state_dir, RESTORE_FILE)
    local_host = receiving_host
    if os.path.exists(restore_path):
        with open(restore_path, encoding="utf-8") as f:
            tables = json.load(f)["tables"]
        _replace_database(sim.db, tables)
        local_host = _restored_master(tables)
        _unlink_safe(restore_path)
    _startup_sync(sim.db, local_host, address)
    sim.db.flush()
    time.sleep(float(sim.options.get("db_restore_restart_seconds", DEFAULT_RESTART_S)))
    http_server = sim._listen(address, ports["http"], local_host, None)  # pylint: disable=protected-access
    https_server = sim._listen(address, ports["https"], local_host, tls_context)  # pylint: disable=protected-access
    sim.listeners[local_host] = {"http": http_server, "https": https_server}
    host_uuid = sim.db.get_field("host", local_host, "uuid")
    sim.meta.setdefault("ports", {})[host_uuid] = {"port": ports["http"],
                                                   "tls_port": ports["https"]}
    sim.save_meta()
    for server in (http_server, https_server):
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()


def _replace_database(db, tables):
    """xapi.ml: a restore file present at start is the database xapi runs on (sessions and
    tasks do not survive a restart)."""
    with db.lock:
        for cls in db.tables:
            db.tables[cls] = {}
            db.uuid_index[cls] = {}
        for ref in list(db.class_of_ref):
            del db.class_of_ref[ref]
        for cls, table in tables.items():
            if cls not in db.tables or cls in NOT_PERSISTED:
                continue
            for ref, record in table.items():
                if "current_operations" in record:
                    record["current_operations"] = {}
                db.tables[cls][ref] = record
                db.uuid_index[cls][record["uuid"]] = ref
                db.class_of_ref[ref] = cls
        _drop_dangling_set_members(db)
        db._dirty = True  # pylint: disable=protected-access
        db.changed.notify_all()


def _drop_dangling_set_members(db):
    """Relation sets keep only members that exist (xapi's db_cache computes them)."""
    for left, _field, right, set_field in RELATIONS:
        for record in db.tables[right].values():
            record[set_field] = [r for r in record.get(set_field, []) if r in db.tables[left]]


def _startup_sync(db, local_host, address):
    """What the restarted master does at start: its address; VMs whose host is gone reset to
    Halted (dbsync_master reset_vms_running_on_missing_hosts); a freshly installed host runs
    no guest, so its own guests are Halted too (dbsync_slave resync)."""
    db.set_field("host", local_host, "address", address)
    for vm_ref, vm in db.records("VM").items():
        if vm["power_state"] not in ("Running", "Paused", "Suspended"):
            continue
        dangling = not db.exists("host", vm["resident_on"])
        own_guest = vm["resident_on"] == local_host and not vm["is_control_domain"]
        if (dangling and vm["power_state"] != "Suspended") or (own_guest and vm["power_state"] != "Suspended"):
            ops.set_halted(db, vm_ref)


# ----------------------------------------------------------------------------- /import_metadata


class _MetadataImporter(_Importer):
    """import.ml Metadata_import: SRs by uuid, VDIs that already exist (``vdi:`` map, then
    (SR, location)); no disk data; a dry run only resolves and checks."""

    def __init__(self, ctx, task, restore, force, dry_run, vdi_map):
        super().__init__(ctx, task, NULL_REF, restore, force)
        self.dry_run = dry_run
        self.vdi_map = vdi_map

    def run(self, content_length):
        archive, header = self._read_header(content_length)
        objects = header["objects"]
        if self.dry_run:
            self._dry_run(objects)
            archive.drain(64 * 1024)
            return []
        try:
            self._handle_all(objects)
            archive.drain(64 * 1024)
        except BaseException:
            if not self.force:
                self._run_cleanup()
            raise
        return self._complete_import()

    def _dry_run(self, objects):
        """handle_dry_run: lookups and prechecks only, nothing created."""
        self.objects = objects
        for cls, handler in (("SR", self._sr), ("VDI", self._vdi)):
            for obj in objects:
                if obj["class"] == cls:
                    handler(obj["id"], obj["snapshot"])
        for obj in objects:
            if obj["class"] == "VM":
                self._existing_vm_to_replace(obj["snapshot"])

    def _sr(self, export_id, record):
        found = self.db.find("SR", uuid=record.get("uuid"))
        if found:
            self.table[export_id] = found[0]

    def _vdi(self, export_id, record):
        original_sr = self._find_in_export(record.get("SR"))
        if original_sr.get("content_type") == "iso":
            return super()._vdi(export_id, record)
        found = self._mapped_vdi(record) or self._vdi_by_location(record)
        if found is not None:
            self.table[export_id] = found
            return None
        if self.force:
            return None  # "ignoring error because '--force' is set": the disk is skipped
        if record.get("SR") in self.table:
            raise XapiError("VDI_LOCATION_MISSING", self.table[record["SR"]],
                            record.get("location", ""))
        raise XapiError("VDI_CONTENT_ID_MISSING")

    def _mapped_vdi(self, record):
        destination = self.vdi_map.get(record.get("uuid"))
        if destination is None:
            return None
        found = self.db.find("VDI", uuid=destination)
        return found[0] if found else None

    def _vdi_by_location(self, record):
        sr = self.table.get(record.get("SR"))
        if sr is None:
            return None
        found = [ref for ref, vdi in self.db.records("VDI").items()
                 if vdi["SR"] == sr and vdi["location"] == record.get("location")]
        return found[0] if len(found) == 1 else None


def _vdi_map(query):
    """read_map_params "vdi": every ``vdi:<source uuid>=<destination uuid>`` query pair."""
    return {key[len("vdi:"):]: value for key, value in query.items() if key.startswith("vdi:")}


def import_metadata_handler(ctx):
    if _authenticate_or_401(ctx, "VM.import_metadata") is None:
        return
    task = ctx.task_for_request("VM.metadata_import")

    def flag(name):  # import.ml find_query_flag
        return ctx.query.get(name) == "true"

    _write_head(ctx, ["HTTP/1.1 200 OK", "Connection: close", NO_CACHE, "task-id:" + task.ref,
                      CONTENT_TYPE])
    length = ctx.headers.get("Content-Length")
    importer = _MetadataImporter(ctx, task, flag("restore"), flag("force"), flag("dry_run"),
                                 _vdi_map(ctx.query))
    try:
        vm_refs = importer.run(int(length) if length is not None else None)
    except Exception as exc:
        if not isinstance(exc, (XapiError, xva.XvaFailure, xva.PrematureEof, ConnectionError)):
            traceback.print_exc()
        task.fail(_failure_info(exc, task.ref))
        return
    task.complete(ocaml_xmlrpc.fragment_of_refs(vm_refs))


HANDLERS = {
    ("PUT", "/pool/xmldbdump"): restore_database_handler,
    ("PUT", "/import_metadata"): import_metadata_handler,
}
