"""XML-RPC method dispatch: name lookup, parameter count, session check, Async, generic calls.

Order of checks as in xapi's generated server (ocaml/idl/ocaml_backend/gen_server.ml):
unknown method -> MESSAGE_METHOD_UNKNOWN [method]; wrong arity -> MESSAGE_PARAMETER_COUNT_MISMATCH
[method; expected; received] (counts include the session argument); then the session
(SESSION_INVALID [handle]); then the call.  ``Async.<Class>.<call>`` returns a task ref at once.
"""

import time

from tests.xapisim import filter as xfilter
from tests.xapisim.db import DateTimeText
from tests.xapisim.errors import XapiError
from tests.xapisim.schema import CLASSES, CLASS_INFO, NULL_REF, has_name_label

METHODS = {}


class Method:
    def __init__(self, fn, arities, async_ok, needs_session=True):
        self.fn = fn
        self.arities = tuple(arities)
        self.async_ok = async_ok
        self.needs_session = needs_session


def api_method(name, arity, async_ok=False, needs_session=True):
    """Register ``fn(call, *args_after_session)``.  ``arity`` is the number of parameters on
    the wire, the session included (``VM.get_record(session, vm)`` = 2); a tuple means
    versioned parameters (xapi accepts each listed count)."""
    arities = arity if isinstance(arity, tuple) else (arity,)

    def register(fn):
        METHODS[name] = Method(fn, arities, async_ok, needs_session)
        return fn
    return register


class Call:
    """What one API call sees: the host it arrived on, its session, its task when async."""

    def __init__(self, host, method, session=None, task=None):
        self.host = host
        self.sim = host.sim
        self.db = host.sim.db
        self.method = method
        self.session = session
        self.task = task

    def ref(self, cls, ref):
        """Validate a reference argument: HANDLE_INVALID [class; ref] when unknown."""
        ref = str(ref)
        if not self.db.exists(cls, ref):
            raise XapiError("HANDLE_INVALID", cls, ref)
        return ref


# ---------------------------------------------------------------------------------- dispatch
def dispatch(host, method, params):
    """Run one call; returns the XenAPI envelope (a dict) to encode."""
    try:
        return {"Status": "Success", "Value": call(host, method, params)}
    except XapiError as exc:
        return {"Status": "Failure", "ErrorDescription": exc.description}


def call(host, method, params):
    """Run one call and return its value, or raise XapiError (shared by XML-RPC and JSON-RPC).

    As xapi's generated dispatcher: the ``Async.`` prefix is stripped before the lookup, and
    errors name the stripped method; the parameter counts in MESSAGE_PARAMETER_COUNT_MISMATCH
    leave out the session (expected = mandatory parameters, received = len(params) - 1).
    A call with defaulted parameters accepts any count from its mandatory ones up.
    """
    is_async = method.startswith("Async.")
    name = method[len("Async."):] if is_async else method
    handler = resolve(name)
    if handler is None or (is_async and not handler.async_ok):
        raise XapiError("MESSAGE_METHOD_UNKNOWN", name)
    session_args = 1 if handler.needs_session else 0
    mandatory = min(handler.arities)
    accepted = len(params) in handler.arities or \
        (len(handler.arities) > 1 and len(params) >= mandatory)
    if not accepted:
        raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", name, mandatory - session_args,
                        len(params) - session_args)
    session = None
    args = params
    if handler.needs_session:
        session = check_session(host, params[0])
        args = params[1:]
    failure = host.sim.faults.task_failure_for(name)
    if is_async:
        task = host.sim.tasks.create("Async." + name, "", host.host_ref, session)
        context = Call(host, name, session, task)

        def run():
            if failure:
                raise XapiError(*failure)
            return handler.fn(context, *args)
        host.sim.tasks.run_async(task, run)
        return task
    if failure:
        raise XapiError(*failure)
    return handler.fn(Call(host, name, session), *args)


_dispatch = call  # the name the events/JSON-RPC code used first


def check_session(host, session):
    sim = host.sim
    session = str(session)
    if sim.faults.take_session_expiry():
        sim.sessions.destroy(session)
    return sim.sessions.check(session)


def resolve(name):
    """The Method for 'Class.call', specific calls first, then the generic accessors."""
    if name in METHODS:
        return METHODS[name]
    cls, _dot, op = name.partition(".")
    if cls not in CLASSES or not op:
        return None
    return generic_method(cls, op)


# ---------------------------------------------------------------------------------- generic
# The accessor surface xapi generates from its datamodel (ocaml/idl/datamodel_utils.ml
# messages_of_obj + on_client_side), driven by schema.CLASSES / CLASS_INFO (datamodel.json):
# get_<field> for every field; set_<field>, add_to_/remove_from_ (maps), add_/remove_ (sets)
# for RW fields and for fields whose class declares the explicit message; get_record, get_all,
# get_by_uuid; get_all_records(_where) for the classes xapi exposes them for; get_by_name_label
# where the class has name_label; create/destroy when gen_constructor_destructor.  A class not
# in the database (message) has only its explicit messages.  Accessors of a removed field answer
# MESSAGE_REMOVED (gen_server.ml).  Explicit implementations in METHODS take precedence.
def generic_method(cls, op):
    fields = CLASSES[cls]
    info = CLASS_INFO[cls]
    if not info.in_db and op not in info.messages:
        return None
    readers = {
        "get_record": (2, lambda call, ref: _record(call, cls, ref)),
        "get_by_uuid": (2, lambda call, uuid: call.db.by_uuid(cls, _string(uuid, "uuid"))),
    }
    # get_all itself is database-only; clients get the public get_all, get_all_where and
    # get_all_records(_where) for the classes in datamodel.ml expose_get_all_messages_for.
    if info.expose_get_all_records or "get_all" in info.messages:
        readers["get_all"] = (1, lambda call: call.db.refs(cls))
    if info.expose_get_all_records or "get_all_records" in info.messages:
        readers["get_all_records"] = (1, lambda call: _all_records(call, cls))
        readers["get_all_records_where"] = (2, lambda call, expr: _records_where(call, cls, expr))
    if info.expose_get_all_records:
        readers["get_all_where"] = (2, lambda call, expr: list(_records_where(call, cls, expr)))
    if op in readers:
        arity, fn = readers[op]
        return Method(fn, (arity,), False)
    if op == "get_by_name_label" and has_name_label(cls):
        return Method(lambda call, label: call.db.find(cls, name_label=_string(label, "label")),
                      (2,), False)
    if op == "create" and info.gen_constructor_destructor:
        return Method(lambda call, record: generic_create(call, cls, record), (2,), True)
    if op == "destroy" and info.gen_constructor_destructor:
        return Method(lambda call, ref: generic_destroy(call, cls, ref), (2,), True)
    if not info.in_db:
        return None
    for prefix, maker in _FIELD_OPS:
        if op.startswith(prefix):
            field = fields.get(op[len(prefix):])
            if field is not None:
                if prefix != "get_" and field.qualifier != "RW" and \
                        "%s.%s" % (cls, op) not in PLAIN_EXPLICIT:
                    return None  # an explicit message with its own logic, not modelled
                method = maker(cls, field)
                if method is not None and field.removed:
                    return Method(_removed, method.arities, False)
                return method
    return None


# Explicit messages on non-RW fields whose xapi implementation is a plain database write
# (xapi_vm.ml add_to_other_config = Db.VM.add_to_other_config, set_blocked_operations, ...):
# the generic setter serves them ("partial" in the coverage table: RBAC key checks and SM
# calls left out).  Every other explicit set_/add_/remove_ message without an implementation
# in METHODS answers MESSAGE_METHOD_UNKNOWN.
PLAIN_EXPLICIT = frozenset(
    ["VM.%s%s" % (op, f) for f in ("other_config", "platform", "blocked_operations", "NVRAM")
     for op in ("set_", "add_to_", "remove_from_")]
    + ["VDI.set_" + f for f in ("name_label", "name_description", "sharable", "read_only",
                                "allow_caching", "on_boot")]
    + ["SR.set_name_label", "SR.set_name_description", "SR.set_shared", "PBD.set_device_config",
       "VIF.set_locking_mode", "network.set_default_locking_mode", "network.add_purpose",
       "network.remove_purpose"]
    + ["VIF.%s%s" % (op, f) for f in ("ipv4_allowed", "ipv6_allowed")
       for op in ("set_", "add_", "remove_")]
    + ["task.%s%s" % (op, "other_config") for op in ("set_", "add_to_", "remove_from_")])


def generic_method_names():
    """Every Class.call the generic surface answers (for system.listMethods)."""
    names = set()
    ops = ["get_all", "get_record", "get_by_uuid", "get_all_records", "get_all_records_where",
           "get_all_where", "get_by_name_label", "create", "destroy"]
    for cls, fields in CLASSES.items():
        for name in fields:
            ops_for_field = ["get_", "set_", "add_to_", "remove_from_", "add_", "remove_"]
            for prefix in ops_for_field:
                if generic_method(cls, prefix + name) is not None:
                    names.add("%s.%s%s" % (cls, prefix, name))
        for op in ops:
            if generic_method(cls, op) is not None:
                names.add("%s.%s" % (cls, op))
    return names


def _removed(call, *args):
    raise XapiError("MESSAGE_REMOVED")


# ---------------------------------------------------------------------------------- wire types
def _string(value, name):
    if not isinstance(value, str):
        raise XapiError("FIELD_TYPE_ERROR", name)
    return value


def check_value(field, value, name=None):
    """The wire value converted for ``field``, or FIELD_TYPE_ERROR [field] when its type is
    wrong (xapi's datamodel_errors.ml: "the value you supplied ... was of the wrong type";
    current xapi's unmarshaller reports a bad wire type as INTERNAL_ERROR, see README) and
    INVALID_VALUE [field; value] for an enum value the type does not have."""
    name = name or field.name
    kind = field.kind
    if kind in ("S", "R"):
        if not isinstance(value, (list, tuple)):
            raise XapiError("FIELD_TYPE_ERROR", name)
        return [_check_scalar(field, "r" if kind == "R" else _element_kind(field), v, name)
                for v in value]
    if kind == "m":
        if not isinstance(value, dict):
            raise XapiError("FIELD_TYPE_ERROR", name)
        return {_check_scalar(field, "s", k, name): _check_scalar(field, _map_value_kind(field),
                                                                  v, name)
                for k, v in value.items()}
    return _check_scalar(field, kind, value, name)


def _element_kind(field):
    return "e" if field.type.startswith("set:enum:") else (
        "i" if field.type == "set:int" else "s")


def _map_value_kind(field):
    value_type = field.type.split(":", 2)[2] if field.type.count(":") >= 2 else "string"
    if field.type.startswith("map:enum:"):
        value_type = field.type.split(":", 3)[3]
    if value_type.startswith("enum:"):
        return "e"
    return {"int": "i", "float": "f", "bool": "b"}.get(value_type, "s")


def _check_scalar(field, kind, value, name):
    if kind == "i":
        if isinstance(value, bool):
            raise XapiError("FIELD_TYPE_ERROR", name)
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        raise XapiError("FIELD_TYPE_ERROR", name)
    if kind == "f":
        if isinstance(value, bool):
            raise XapiError("FIELD_TYPE_ERROR", name)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise XapiError("FIELD_TYPE_ERROR", name) from None
    if kind == "b":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise XapiError("FIELD_TYPE_ERROR", name)
    if kind == "d":
        text = getattr(value, "value", value)
        if not isinstance(text, str):
            raise XapiError("FIELD_TYPE_ERROR", name)
        return text
    if not isinstance(value, str):
        raise XapiError("FIELD_TYPE_ERROR", name)
    if kind == "e" and field.enum and value not in field.enum and \
            value.lower() not in [v.lower() for v in field.enum]:
        raise XapiError("INVALID_VALUE", name, value)
    if kind == "e" and field.enum:
        return next((v for v in field.enum if v.lower() == value.lower()), value)
    return value


def _getter(cls, field):
    def get(call, ref):
        value = call.db.get_field(cls, call.ref(cls, ref), field.name)
        return DateTimeText(value) if field.kind == "d" else value
    return Method(get, (2,), False)


def _setter(cls, field):
    if not field.writable:
        return None

    def set_(call, ref, value):
        ref = call.ref(cls, ref)
        call.db.set_field(cls, ref, field.name, check_value(field, value))
        return ""
    return Method(set_, (3,), False)


def _map_add(cls, field):
    if not field.map_ops:
        return None

    def add(call, ref, key, value):
        ref = call.ref(cls, ref)
        checked = check_value(field, {_string(key, "key"): value})
        call.db.map_add(cls, ref, field.name, *next(iter(checked.items())))
        return ""
    return Method(add, (4,), False)


def _map_remove(cls, field):
    if not field.map_ops:
        return None

    def remove(call, ref, key):
        call.db.map_remove(cls, call.ref(cls, ref), field.name, _string(key, "key"))
        return ""
    return Method(remove, (3,), False)


def _set_add(cls, field):
    if not field.set_ops:
        return None

    def add(call, ref, value):
        ref = call.ref(cls, ref)
        call.db.set_add(cls, ref, field.name, check_value(field, [value])[0])
        return ""
    return Method(add, (3,), False)


def _set_remove(cls, field):
    if not field.set_ops:
        return None

    def remove(call, ref, value):
        ref = call.ref(cls, ref)
        call.db.set_remove(cls, ref, field.name, check_value(field, [value])[0])
        return ""
    return Method(remove, (3,), False)


# Longer prefixes first: "add_to_" must win over "add_".
_FIELD_OPS = [("get_", _getter), ("set_", _setter), ("add_to_", _map_add),
              ("remove_from_", _map_remove), ("add_", _set_add), ("remove_", _set_remove)]


def constructor_fields(cls, record):
    """The constructor's fields from a create() record, checked, with xapi's defaults.

    As gen_server.ml unmarshals a constructor record: each StaticRO/RW field is looked up in
    the struct; a missing field with a datamodel default takes it, a missing field without one
    fails in Server_helpers.my_assoc (INTERNAL_ERROR, the exception's text); fields outside
    the constructor are ignored."""
    if not isinstance(record, dict):
        raise XapiError("INTERNAL_ERROR", 'Failure("bad __structure")')
    fields = CLASSES[cls]
    out = {}
    for name in CLASS_INFO[cls].constructor:
        field = fields[name]
        if name in record:
            out[name] = check_value(field, record[name])
        elif field.dm_default is not None or field.kind in ("R",):
            out[name] = field.default()
        else:
            raise XapiError("INTERNAL_ERROR",
                            'Server_helpers.Dispatcher_FieldNotFound("%s")' % name)
    return out


def generic_create(call, cls, record):
    fields = constructor_fields(cls, record)
    for name, value in fields.items():
        field = CLASSES[cls][name]
        if field.kind == "r" and value != NULL_REF and not call.db.exists(field.target, value):
            raise XapiError("HANDLE_INVALID", field.target, value)
    hook = CREATE_HOOKS.get(cls)
    if hook is not None:
        hook(call, fields)
    return call.db.create(cls, fields)


def generic_destroy(call, cls, ref):
    ref = call.ref(cls, ref)
    hook = DESTROY_HOOKS.get(cls)
    if hook is not None:
        hook(call, ref)
    call.db.delete(cls, ref)
    return ""


# Class-specific checks for the generated constructors/destructors (registered by ops modules).
CREATE_HOOKS = {}
DESTROY_HOOKS = {}


def _record(call, cls, ref):
    return call.db.to_wire(cls, call.db.get(cls, call.ref(cls, ref)))


def _all_records(call, cls):
    return {ref: call.db.to_wire(cls, rec) for ref, rec in call.db.records(cls).items()}


def _records_where(call, cls, expr):
    compiled = xfilter.compile_filter(str(expr))
    return {ref: call.db.to_wire(cls, rec) for ref, rec in call.db.records(cls).items()
            if xfilter.evaluate(compiled, rec)}


# ---------------------------------------------------------------------------------- session
@api_method("session.login_with_password", (2, 3, 4), needs_session=False)
def session_login(call, username, password, version="1.1", originator=""):
    sim = call.sim
    if not call.host.is_master:
        raise XapiError("HOST_IS_SLAVE", sim.master_address())
    check_password(sim, username, password)
    return sim.sessions.create(call.host.host_ref, str(username), str(originator))


@api_method("session.slave_local_login_with_password", 2, needs_session=False)
def session_slave_local_login(call, username, password):
    sim = call.sim
    check_password(sim, username, password)
    return sim.sessions.create(call.host.host_ref, str(username))


def check_password(sim, username, password):
    """Local (PAM) authentication as xapi_session.ml do_local_auth reports a failure:
    SESSION_AUTHENTICATION_FAILED [uname; PAM's message] (the HTTP 401 path has no params)."""
    if str(username) != sim.username or str(password) != sim.password:
        raise XapiError("SESSION_AUTHENTICATION_FAILED", str(username), "Authentication failure")


@api_method("session.logout", 1, needs_session=False)
def session_logout(call, session):
    call.sim.sessions.destroy(str(session))
    return ""


@api_method("session.local_logout", 1, needs_session=False)
def session_local_logout(call, session):
    return session_logout(call, session)


@api_method("session.get_this_host", 2)
def session_get_this_host(call, session):
    return call.db.get_field("session", call.ref("session", session), "this_host")


# ---------------------------------------------------------------------------------- task
@api_method("task.create", 3)
def task_create(call, label, description):
    return call.sim.tasks.create(str(label), str(description), call.host.host_ref, call.session,
                                 cancellable=True)


@api_method("task.destroy", 2)
def task_destroy(call, task):
    call.db.delete("task", call.ref("task", task))
    return ""


@api_method("task.cancel", 2, async_ok=True)
def task_cancel(call, task):
    call.sim.tasks.cancel(call.ref("task", task))
    return ""


@api_method("task.set_status", 3)
def task_set_status(call, task, value):
    call.db.set_field("task", call.ref("task", task), "status", str(value))
    return ""


@api_method("task.set_progress", 3)
def task_set_progress(call, task, value):
    call.db.set_field("task", call.ref("task", task), "progress", float(value))
    return ""


# ---------------------------------------------------------------------------------- host, pool
@api_method("host.get_servertime", 2)
def host_get_servertime(call, host):
    call.ref("host", host)
    return DateTimeText(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime()))


@api_method("host.get_server_localtime", 2)
def host_get_server_localtime(call, host):
    call.ref("host", host)
    return DateTimeText(time.strftime("%Y%m%dT%H:%M:%S", time.localtime()))
