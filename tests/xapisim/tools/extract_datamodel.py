"""Extract the classes a pool backup/restore/DR touches from xapi's OCaml datamodel.

Usage (not run by the tests; its output ``tests/xapisim/datamodel.json`` is committed):

    python3 tests/xapisim/tools/extract_datamodel.py /path/to/xen-api.git [REV] \
        > tests/xapisim/datamodel.json
    python3 tests/xapisim/tools/extract_datamodel.py --coverage   # README coverage table

The first argument is a git directory (bare or not) of xapi-project/xen-api; the files are read
with ``git show REV:ocaml/idl/<file>`` (REV defaults to HEAD).

How it reads OCaml without an OCaml parser: a tokenizer (comments, strings, identifiers,
``~label:`` arguments, brackets) and a tiny evaluator for the few forms the datamodel uses to
list fields: ``field ~ty:... ~qualifier:... ~default_value:... ~lifecycle:[...] "name" "doc"``,
``uid``, ``namespace ~name:"x" ~contents:...`` (prefix ``x_``), ``names ... QUALIFIER``,
``allowed_and_current_operations ops``, list concatenation ``@``, and identifiers bound by
``let NAME = <list>`` earlier in the same file (or in datamodel_common.ml).  Enum types are
resolved from ``let NAME = Enum ("wire_name", [("value", "doc"); ...])``.  Anything else is
reported in ``"unparsed"`` of the class (hand-checked: see HAND_CHECKED below and the README).

The semantics follow ocaml/idl/datamodel_common.ml (``field`` defaults: qualifier RW, type
String, no default value) and datamodel_utils.ml (which messages exist: getters for every
field, setters / add_to / remove_from / add / remove only for RW fields, create/destroy only
when gen_constructor_destructor) and gen_client.ml (the constructor takes the StaticRO and RW
fields).
"""

import json
import os
import re
import subprocess
import sys

CLASSES = ["pool", "host", "VM", "VM_metrics", "VM_guest_metrics", "VM_appliance", "VBD",
           "VDI", "SR", "PBD", "VIF", "network", "PIF", "task", "session", "message", "blob",
           "event"]
FILES = ["datamodel_types.ml", "datamodel_common.ml", "datamodel.ml", "datamodel_vm.ml",
         "datamodel_host.ml", "datamodel_pool.ml"]
# xapi's qualifiers and how its documentation prints them.
QUALIFIER_DOC = {"RW": "RW", "StaticRO": "RO_constructor", "DynamicRO": "RO_runtime"}
# Facts checked by hand against the OCaml where the evaluator gives up (see "unparsed").
# (class, field) -> default; xapi-consts/constants.ml: default_ssh_enabled_timeout = 0L,
# default_console_idle_timeout = 0L.
HAND_CHECKED = {("host", "ssh_enabled_timeout"): 0, ("host", "console_idle_timeout"): 0}

TOKEN = re.compile(r'''
    (?P<ws>\s+)
  | (?P<str>"(?:\\[\s\S]|[^"\\])*")
  | (?P<label>[~?][a-z_][A-Za-z0-9_']*:?)
  | (?P<num>-?[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?[Ll]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_']*(?:\.[A-Za-z_][A-Za-z0-9_']*)*)
  | (?P<punct>->|::|:=|\|\]|\[\||[()\[\];,@^=|{}*<>:.+\-/!&'`#?~%$])
''', re.VERBOSE)


class Tok:
    __slots__ = ("kind", "text", "pos")

    def __init__(self, kind, text, pos):
        self.kind, self.text, self.pos = kind, text, pos

    def __repr__(self):
        return "%s:%s" % (self.kind, self.text)


def strip_comments(text):
    """Remove (* ... *) comments (nested), leaving strings intact."""
    out, i, depth, n = [], 0, 0, len(text)
    while i < n:
        if depth == 0 and text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("(*", i) and not text.startswith("(*)", i):
            depth += 1
            i += 2
        elif depth and text.startswith("*)", i):
            depth -= 1
            i += 2
        elif depth:
            i += 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def tokenize(text):
    text = strip_comments(text)
    tokens, pos = [], 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m:
            raise ValueError("cannot tokenize at %r" % text[pos:pos + 40])
        pos = m.end()
        if m.lastgroup != "ws":
            tokens.append(Tok(m.lastgroup, m.group(), m.start()))
    return tokens


def string_value(tok):
    return json.loads(tok.text.replace("\\\n", "").replace("\\'", "'"))


OPEN = {"(": ")", "[": "]", "{": "}", "[|": "|]"}


def group_end(tokens, i):
    """Index just past the balanced group starting at tokens[i] (or past the single token)."""
    if tokens[i].text not in OPEN:
        return i + 1
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j].text in OPEN:
            depth += 1
        elif tokens[j].text in OPEN.values():
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError("unbalanced group")


STOP = {";", "]", ")", "@", "in", "let", "|]", "}", ",", "::", "and", "end"}


def application(tokens, i):
    """Parse ``f arg arg ~l:arg ...`` starting at tokens[i]; returns (name, labels,
    positionals, end index).  Arguments are token slices."""
    name = tokens[i].text
    labels, positionals, j = {}, [], i + 1
    while j < len(tokens) and tokens[j].text not in STOP:
        tok = tokens[j]
        if tok.kind == "label":
            label = tok.text[1:]
            if label.endswith(":"):
                end = group_end(tokens, j + 1)
                labels[label[:-1]] = tokens[j + 1:end]
                j = end
            else:
                labels[label] = [Tok("ident", label, tok.pos)]  # punned ~x
                j += 1
        else:
            end = group_end(tokens, j)
            positionals.append(tokens[j:end])
            j = end
    return name, labels, positionals, j


def unparen(toks):
    while len(toks) >= 2 and toks[0].text == "(" and group_end(toks, 0) == len(toks):
        toks = toks[1:-1]
    return toks


def split_top(toks, sep):
    parts, depth, start = [], 0, 0
    for k, tok in enumerate(toks):
        if tok.text in OPEN:
            depth += 1
        elif tok.text in OPEN.values():
            depth -= 1
        elif depth == 0 and tok.text == sep:
            parts.append(toks[start:k])
            start = k + 1
    parts.append(toks[start:])
    return [p for p in parts if p]


class Source:
    """All files' tokens plus every ``let NAME [args] = body`` binding (by file, in order)."""

    def __init__(self, texts):
        self.tokens = {name: tokenize(text) for name, text in texts.items()}
        self.lets = {}  # name -> list of (file, index, param names, body tokens)
        for fname, toks in self.tokens.items():
            for k, tok in enumerate(toks):
                if tok.text != "let" or k + 1 >= len(toks) or toks[k + 1].kind != "ident":
                    continue
                j = k + 1
                if toks[j].text == "rec":
                    j += 1
                name = toks[j].text
                params = []
                j += 1
                while j < len(toks) and toks[j].text != "=" and toks[j].kind in ("ident", "label"):
                    params.append(toks[j].text)
                    j += 1
                if j >= len(toks) or toks[j].text != "=":
                    continue
                body_end = self._body_end(toks, j + 1)
                binding = (fname, tok.pos, params, toks[j + 1:body_end])
                self.lets.setdefault(name, []).append(binding)

    @staticmethod
    def _body_end(toks, i):
        """End of a let body: a top-level ``let``/``module``/... that is not a local
        ``let ... in`` (one that starts the body or follows ``in``/``=``)."""
        depth, local = 0, 0
        for j in range(i, len(toks)):
            text = toks[j].text
            if text in OPEN or text in ("struct", "begin"):
                depth += 1
            elif text in OPEN.values() or text == "end":
                if depth == 0:
                    return j
                depth -= 1
            elif depth == 0 and text == "let" and (j == i or toks[j - 1].text in ("in", "=")):
                local += 1
            elif depth == 0 and text == "in" and local:
                local -= 1
            elif depth == 0 and text in ("let", "module", "in", "and", "type"):
                return j
        return len(toks)

    def lookup(self, name, fname=None, before=None):
        """The binding of ``name``: the last one before character offset ``before`` in the
        same file, else the
        last one in datamodel_common.ml / datamodel_types.ml, else any."""
        found = self.lets.get(name.split(".")[-1], [])
        same = [b for b in found if b[0] == fname and (before is None or b[1] < before)]
        if same:
            return same[-1]
        for common in ("datamodel_common.ml", "datamodel_types.ml"):
            shared = [b for b in found if b[0] == common]
            if shared:
                return shared[-1]
        return found[-1] if found else None


class Extractor:
    def __init__(self, source):
        self.src = source
        self.enums = {}
        self.releases = self._releases()
        self.class_names = self._class_names()

    # ---------------------------------------------------------------- constants
    def _releases(self):
        toks = self.src.tokens["datamodel_types.ml"]
        rel_names = {n: string_value(b[3][0]) for n, bs in self.src.lets.items()
                     for b in bs if n.startswith("rel_") and b[3] and b[3][0].kind == "str"}
        releases, current = [], {}
        for k, tok in enumerate(toks):
            if tok.text in ("code_name", "version_major", "version_minor", "branding") \
                    and k + 2 < len(toks) and toks[k + 1].text == "=":
                value = toks[k + 2]
                if tok.text == "code_name":
                    current = {"code_name": rel_names.get(toks[k + 3].text)
                               if value.text == "Some" else None}
                    releases.append(current)
                elif value.kind == "num":
                    current[tok.text] = int(value.text)
                elif value.kind == "str":
                    current[tok.text] = string_value(value)
        self.rel_names = rel_names
        return [r for r in releases if "version_major" in r]

    def _class_names(self):
        names = {}
        for name, bindings in self.src.lets.items():
            if name.startswith("_") and bindings[-1][0] == "datamodel_common.ml":
                body = bindings[-1][3]
                if len(body) == 1 and body[0].kind == "str":
                    names[name] = string_value(body[0])
        return names

    def release_of(self, tok):
        if tok.kind == "str":
            return string_value(tok)
        return self.rel_names.get(tok.text.split(".")[-1], tok.text)

    # ---------------------------------------------------------------- types and values
    def type_of(self, toks, fname, pos):
        toks = unparen(toks)
        head = toks[0].text
        if len(toks) == 1:
            simple = {"String": "string", "Int": "int", "Float": "float", "Bool": "bool",
                      "DateTime": "datetime"}
            if head in simple:
                return simple[head]
            binding = self.src.lookup(head, fname, pos)
            if binding is None:
                raise ValueError("unknown type %s" % head)
            return self.type_of(binding[3], binding[0], binding[1])
        if head == "Ref":
            return "ref:" + self.class_names.get(toks[1].text, toks[1].text)
        if head == "Set":
            return "set:" + self.type_of(toks[1:], fname, pos)
        if head == "Map":
            inner = split_top(unparen(toks[1:]), ",")
            return "map:%s:%s" % (self.type_of(inner[0], fname, pos),
                                  self.type_of(inner[1], fname, pos))
        if head == "Enum":
            inner = split_top(unparen(toks[1:]), ",")
            name = string_value(inner[0][0])
            values = None
            body = unparen(inner[1])
            if body and body[0].text == "List.map" and body[1].text == "operation_enum":
                values = self.operation_enum_values(body, fname, pos)
            elif body and body[0].text == "[":
                values = []
                for item in split_top(body[1:-1], ";"):
                    item = unparen(item)
                    if item and item[0].kind == "str":
                        values.append(string_value(item[0]))
                    else:
                        values = None
                        break
            if values is not None or name not in self.enums:
                self.enums[name] = values
            return "enum:" + name
        if head == "Option":
            return "option:" + self.type_of(toks[1:], fname, pos)
        raise ValueError("unknown type expression %s" % " ".join(t.text for t in toks))

    def operation_enum_values(self, body, fname, pos):
        """``List.map operation_enum [msg; msg] @ [("value", "doc"); ...]``: each message's
        wire name, then the literal values."""
        values = []
        for part in split_top(body, "@"):
            part = unparen(part)
            if part[0].text == "List.map":
                for item in split_top(unparen(part[2:])[1:-1], ";"):
                    binding = self.src.lookup(item[0].text, fname, pos)
                    names = [string_value(b[k + 1]) for b in [binding[3]]
                             for k, t in enumerate(b) if t.text == "~name:"]
                    values.append(names[0])
            else:
                for item in split_top(part[1:-1], ";"):
                    values.append(string_value(unparen(item)[0]))
        return values

    def value_of(self, toks):
        toks = unparen(toks)
        if not toks:
            return None
        head = toks[0]
        if head.text == "None":
            return None
        if head.text == "Some":
            return self.value_of(toks[1:])
        rest = unparen(toks[1:])
        if head.text in ("VString", "VEnum"):
            return string_value(rest[0]) if rest[0].kind == "str" else rest[0].text
        if head.text in ("VInt", "VFloat"):
            text = "".join(t.text for t in rest).rstrip("Ll")
            try:
                return float(text) if head.text == "VFloat" else int(text)
            except ValueError:
                return {"ocaml": text}  # a named constant: see HAND_CHECKED
        if head.text == "VBool":
            return rest[0].text == "true"
        if head.text == "VMap":
            return {}
        if head.text == "VSet":
            return []
        if head.text == "VRef":
            return "OpaqueRef:NULL"
        if head.text == "VDateTime":
            return "19700101T00:00:00Z"
        raise ValueError("unknown value %s" % " ".join(t.text for t in toks))

    def lifecycle_of(self, toks, fname, pos):
        toks = unparen(toks)
        if len(toks) == 1 and toks[0].kind == "ident":
            binding = self.src.lookup(toks[0].text, fname, pos)
            if binding is None:
                raise ValueError("unknown lifecycle %s" % toks[0].text)
            return self.lifecycle_of(binding[3], binding[0], binding[1])
        if not toks or toks[0].text != "[":
            raise ValueError("lifecycle is not a list")
        steps = []
        for item in split_top(toks[1:-1], ";"):
            parts = split_top(unparen(item), ",")
            steps.append([parts[0][0].text, self.release_of(parts[1][0])])
        return steps

    # ---------------------------------------------------------------- fields
    def make_field(self, name, labels, fname, pos, prefix=""):
        qualifier = labels["qualifier"][0].text if "qualifier" in labels else "RW"
        ty = self.type_of(labels["ty"], fname, pos) if "ty" in labels else "string"
        default = self.value_of(labels["default_value"]) if "default_value" in labels else None
        lifecycle = self.lifecycle_of(labels["lifecycle"], fname, pos) \
            if "lifecycle" in labels else []
        published = [rel for step, rel in lifecycle if step == "Published"]
        removed = any(step == "Removed" for step, _rel in lifecycle)
        internal = "internal_only" in labels and labels["internal_only"][0].text == "true"
        persist = not ("persist" in labels and labels["persist"][0].text == "false")
        return {"name": prefix + name, "type": ty, "qualifier": qualifier,
                "qualifier_doc": QUALIFIER_DOC.get(qualifier, qualifier),
                "default": default,
                "has_default": "default_value" in labels and bool(
                    self._is_some(labels["default_value"])),
                "published": published[0] if published else None,
                "lifecycle": lifecycle, "removed": removed, "internal_only": internal,
                "persist": persist}

    @staticmethod
    def _is_some(toks):
        return unparen(toks)[:1] and unparen(toks)[0].text == "Some"

    def contents(self, toks, fname, pos, prefix, out, unparsed, env=None):
        """Evaluate a list expression of fields into ``out``.  ``env``: local macros from
        ``let NAME PARAMS = EXPR in`` (e.g. ``let field = field ~ty:Int in``)."""
        env = dict(env or {})
        toks = unparen(toks)
        while toks and toks[0].text == "let":
            j, params = 2, []
            name = toks[1].text
            while toks[j].text != "=":
                params.append(toks[j].text)
                j += 1
            depth, k = 0, j + 1
            while k < len(toks):
                if toks[k].text in OPEN or toks[k].text == "let":
                    depth += 1
                elif toks[k].text in OPEN.values() or (toks[k].text == "in" and depth):
                    depth -= 1
                elif toks[k].text == "in" and depth == 0:
                    break
                k += 1
            env[name] = (params, toks[j + 1:k], dict(env))
            toks = unparen(toks[k + 1:])
        self.env = env
        parts = split_top(toks, "@")
        if len(parts) > 1:
            for part in parts:
                self.contents(part, fname, pos, prefix, out, unparsed, env)
            return
        if toks and toks[0].text == "[":
            for item in split_top(toks[1:-1], ";"):
                self.item(item, fname, pos, prefix, out, unparsed, env)
            return
        self.item(toks, fname, pos, prefix, out, unparsed, env)

    def expand(self, toks, env):
        """Expand a call of a local macro: substitute its parameters, keep the call's labels."""
        name, labels, positionals, _end = application(toks, 0)
        params, body, outer = env[name]
        plain = [p for p in params if not p.startswith(("~", "?"))]
        subst = dict(zip(plain, positionals))
        out = []
        for tok in body:
            out.extend(subst.get(tok.text, [tok]) if tok.kind == "ident" else [tok])
        for label, value in labels.items():
            out.append(Tok("label", "~%s:" % label, 0))
            out.extend(value)
        for extra in positionals[len(plain):]:
            out.extend(extra)
        return out, outer

    def item(self, toks, fname, pos, prefix, out, unparsed, env=None):
        env = env or {}
        toks = unparen(toks)
        if not toks:
            return
        head = toks[0].text
        try:
            if head in env:
                expanded, outer = self.expand(toks, env)
                self.item(expanded, fname, pos, prefix, out, unparsed, outer)
            elif head == "field":
                _name, labels, positionals, _end = application(toks, 0)
                strings = [p[0] for p in positionals if len(p) == 1 and p[0].kind == "str"]
                out.append(self.make_field(string_value(strings[0]), labels, fname,
                                           toks[0].pos, prefix))
            elif head == "uid":
                _name, labels, _pos, _end = application(toks, 0)
                labels = dict(labels, qualifier=[Tok("ident", "DynamicRO", 0)])
                out.append(self.make_field("uuid", labels, fname, toks[0].pos, prefix))
            elif head == "names":
                _name, labels, positionals, _end = application(toks, 0)
                qual = positionals[-1]
                for sub in ("label", "description"):
                    lab = dict(labels, qualifier=qual,
                               default_value=tokenize('(Some (VString ""))'))
                    out.append(self.make_field(sub, lab, fname, toks[0].pos, prefix))
            elif head == "allowed_and_current_operations":
                _name, _labels, positionals, _end = application(toks, 0)
                op_type = self.type_of(positionals[0], fname, toks[0].pos)
                life = tokenize('[(Published, rel_rio, "")]')
                for fld, ty, dflt in (("allowed_operations", "set:" + op_type, []),
                                      ("current_operations", "map:string:" + op_type, {})):
                    f = self.make_field(fld, {"qualifier": [Tok("ident", "DynamicRO", 0)],
                                              "lifecycle": life}, fname, toks[0].pos, prefix)
                    f.update(type=ty, default=dflt, has_default=True, persist=False)
                    out.append(f)
            elif head == "namespace":
                _name, labels, _positionals, _end = application(toks, 0)
                inner = prefix + string_value(labels["name"][0]) + "_"
                self.contents(labels["contents"], fname, toks[0].pos, inner, out, unparsed,
                              env)
            elif toks[0].kind == "ident":
                name, _labels, positionals, _end = application(toks, 0)
                binding = self.src.lookup(name, fname, toks[0].pos)
                if binding is None:
                    raise ValueError("unknown binding %s" % name)
                bfile, bpos, params, body = binding
                if params and positionals:
                    # a function of one string (e.g. ``qos "VIF"``): its body does not depend
                    # on the argument for anything we extract.
                    pass
                self.contents(body, bfile, bpos, prefix, out, unparsed)
            else:
                raise ValueError("unknown item")
        except (ValueError, IndexError, KeyError) as exc:
            unparsed.append("%s: %s" % (" ".join(t.text for t in toks[:12]), exc))

    # ---------------------------------------------------------------- classes
    def find_class(self, cls):
        for fname, toks in self.src.tokens.items():
            for k, tok in enumerate(toks):
                if tok.text != "create_obj":
                    continue
                _name, labels, _positionals, _end = application(toks, k)
                name_toks = labels.get("name")
                if not name_toks:
                    continue
                value = name_toks[0]
                cname = string_value(value) if value.kind == "str" else \
                    self.class_names.get(value.text)
                if cname == cls:
                    return fname, tok.pos, labels
        return self.find_record_class(cls)

    def find_record_class(self, cls):
        """The event class is written as a record literal ``{ name= _event; contents= [...];
        messages= [...]; gen_constructor_destructor= false; in_database= false }``."""
        for fname, toks in self.src.tokens.items():
            for k, tok in enumerate(toks[:-2]):
                if tok.text == "name" and toks[k + 1].text == "=" and \
                        self.class_names.get(toks[k + 2].text) == cls:
                    labels = {}
                    start = max(i for i in range(k) if toks[i].text == "{")
                    end = group_end(toks, start)
                    j = start + 1
                    while j < end - 2:
                        if toks[j + 1].text == "=" and toks[j].kind == "ident":
                            vend = group_end(toks, j + 2)
                            value = toks[j + 2:vend]
                            if value and value[0].text == "Lifecycle.from":
                                value = toks[j + 3:group_end(toks, j + 3)]
                            key = {"obj_lifecycle": "lifecycle",
                                   "in_database": "in_db"}.get(toks[j].text, toks[j].text)
                            labels[key] = value
                            j = vend
                        else:
                            j += 1
                    return fname, tok.pos, labels
        raise ValueError("class %s not found" % cls)

    def message_names(self, labels, fname, pos):
        names = []
        toks = unparen(labels.get("messages", []))
        if not toks:
            return names
        items = split_top(toks[1:-1], ";") if toks[0].text == "[" else []
        for item in items:
            ident = item[0].text
            binding = self.src.lookup(ident, fname, pos)
            if binding is None:
                continue
            body = binding[3]
            for k, tok in enumerate(body):
                if tok.text == "~name:" and k + 1 < len(body) and body[k + 1].kind == "str":
                    names.append(string_value(body[k + 1]))
                    break
        return names

    def extract_class(self, cls):
        fname, pos, labels = self.find_class(cls)
        fields, unparsed = [], []
        self.contents(labels["contents"], fname, pos, "", fields, unparsed)
        for field in fields:
            if (cls, field["name"]) in HAND_CHECKED:
                field["default"] = HAND_CHECKED[(cls, field["name"])]
                field["hand_checked"] = True
        lifecycle = self.lifecycle_of(labels["lifecycle"], fname, pos) \
            if "lifecycle" in labels else []
        gen_cd = labels.get("gen_constructor_destructor", [Tok("ident", "false", 0)])[0].text
        api_fields = [f for f in fields if not f["removed"] and not f["internal_only"]]
        return {
            "file": "ocaml/idl/" + fname,
            "lifecycle": lifecycle,
            "published": next((r for s, r in lifecycle if s == "Published"), None),
            "gen_constructor_destructor": gen_cd == "true",
            "in_db": labels.get("in_db", [Tok("ident", "true", 0)])[0].text == "true",
            "persist": labels.get("persist", [Tok("ident", "PersistEverything", 0)])[0].text,
            "messages": self.message_names(labels, fname, pos),
            "constructor": [f["name"] for f in api_fields
                            if f["qualifier"] in ("StaticRO", "RW")],
            "fields": fields,
            "unparsed": unparsed,
        }


def read_sources(gitdir, rev):
    texts = {}
    for name in FILES:
        texts[name] = subprocess.run(
            ["git", "-C", gitdir, "show", "%s:ocaml/idl/%s" % (rev, name)],
            check=True, stdout=subprocess.PIPE).stdout.decode("utf-8")
    commit = subprocess.run(["git", "-C", gitdir, "rev-parse", rev], check=True,
                            stdout=subprocess.PIPE).stdout.decode().strip()
    return texts, commit


def extract(gitdir, rev="HEAD"):
    texts, commit = read_sources(gitdir, rev)
    ex = Extractor(Source(texts))
    classes = {cls: ex.extract_class(cls) for cls in CLASSES}
    # datamodel.ml expose_get_all_messages_for: classes with get_all_records(_where).
    exposed = ex.src.lookup("expose_get_all_messages_for")[3]
    exposed = {ex.class_names.get(t.text) for t in exposed if t.kind == "ident"}
    for cls, spec in classes.items():
        spec["expose_get_all_records"] = cls in exposed
    used = {f["type"].split("enum:")[-1].split(":")[0] for c in classes.values()
            for f in c["fields"] if "enum:" in f["type"]}
    return {
        "source": {"repository": "xapi-project/xen-api", "commit": commit,
                   "files": ["ocaml/idl/" + f for f in FILES],
                   "extractor": "tests/xapisim/tools/extract_datamodel.py"},
        "releases": ex.releases,
        "enums": {name: values for name, values in sorted(ex.enums.items()) if name in used},
        "classes": classes,
    }


# -------------------------------------------------------------------- coverage table
def coverage_table():
    """Markdown table: per class, how many datamodel accessors / messages the simulator
    answers (implemented), answers with restrictions (partial), or not at all (absent)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    sys.path.insert(0, here)
    from tests.xapisim import coverage  # noqa: E402  (run from a checkout)
    return coverage.markdown_table()


def main(argv):
    if argv[1:2] == ["--coverage"]:
        print(coverage_table())
        return 0
    if len(argv) < 2:
        print(__doc__)
        return 2
    data = extract(argv[1], argv[2] if len(argv) > 2 else "HEAD")
    json.dump(data, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
