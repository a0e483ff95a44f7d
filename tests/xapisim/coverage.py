"""How much of xapi's API surface the simulator answers, per class, from the datamodel copy.

For every class of ``datamodel.json`` the messages a real xapi exposes to clients (the
generated accessors of datamodel_utils.ml ``messages_of_obj`` filtered by ``on_client_side``,
plus the class's explicit messages) are classified:

- implemented: answered by an explicit implementation (``api.METHODS``) or by the generated
  accessor surface (getters, RW setters, map/set operations, get_record, get_all, get_by_uuid,
  get_all_records(_where), get_by_name_label, create/destroy);
- partial: an explicit message served by the generic setter because xapi's implementation is
  (nearly) a plain database write (``api.PLAIN_EXPLICIT``: RBAC key checks / SM calls left out);
- absent: answers MESSAGE_METHOD_UNKNOWN.

``python -m tests.xapisim.coverage`` prints the README table; ``--absent CLASS`` lists the
absent messages of a class; ``--update-readme`` rewrites the table in README.md.
"""

import os
import sys

# imported for their side effect: they register their calls
from tests.xapisim import api, dr, events, ops, vmconfig  # noqa: F401 pylint: disable=unused-import
from tests.xapisim.schema import CLASSES, DATAMODEL

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
START, END = "<!-- coverage:start -->", "<!-- coverage:end -->"


def client_messages(cls):
    """Every message name xapi exposes for the class (datamodel_utils.ml)."""
    spec = DATAMODEL["classes"][cls]
    names = list(spec["messages"])
    if not spec["in_db"]:
        return sorted(set(names))
    names += ["get_record", "get_by_uuid"]
    if spec.get("expose_get_all_records"):
        names += ["get_all", "get_all_where", "get_all_records", "get_all_records_where"]
    if spec["gen_constructor_destructor"]:
        names += ["create", "destroy"]
    if any(f["name"] == "name_label" for f in spec["fields"]):
        names.append("get_by_name_label")
    for field in spec["fields"]:
        if field["internal_only"]:
            continue
        names.append("get_" + field["name"])
        if field["qualifier"] == "RW":
            names.append("set_" + field["name"])
            if field["type"].startswith("map:"):
                names += ["add_to_" + field["name"], "remove_from_" + field["name"]]
            elif field["type"].startswith("set:"):
                names += ["add_" + field["name"], "remove_" + field["name"]]
    return sorted(set(names))


def status(cls, message):
    name = "%s.%s" % (cls, message)
    if name in api.METHODS:
        return "implemented"
    if cls not in CLASSES:
        return "absent"
    if api.generic_method(cls, message) is None:
        return "absent"
    return "partial" if name in api.PLAIN_EXPLICIT else "implemented"


def class_coverage(cls):
    counts = {"implemented": [], "partial": [], "absent": []}
    for message in client_messages(cls):
        counts[status(cls, message)].append(message)
    return counts


def markdown_table():
    lines = ["| class | fields | messages | implemented | partial | absent | status |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for cls in DATAMODEL["classes"]:
        counts = class_coverage(cls)
        total = sum(len(v) for v in counts.values())
        if not counts["partial"] and not counts["absent"]:
            overall = "implemented"
        elif counts["implemented"] or counts["partial"]:
            overall = "partial"
        else:
            overall = "absent"
        fields = len([f for f in DATAMODEL["classes"][cls]["fields"] if not f["internal_only"]])
        lines.append("| %s | %d | %d | %d | %d | %d | %s |" % (
            cls, fields, total, len(counts["implemented"]), len(counts["partial"]),
            len(counts["absent"]), overall))
    commit = DATAMODEL["source"]["commit"][:12]
    lines.append("")
    lines.append("Generated from `datamodel.json` (xapi-project/xen-api %s) by "
                 "`python -m tests.xapisim.coverage --update-readme`." % commit)
    return "\n".join(lines)


def update_readme(path=README):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, _start, rest = text.partition(START)
    _old, _end, tail = rest.partition(END)
    if not _start or not _end:
        raise SystemExit("README has no %s ... %s markers" % (START, END))
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + START + "\n" + markdown_table() + "\n" + END + tail)


def main(argv):
    if argv[1:2] == ["--update-readme"]:
        update_readme()
    elif argv[1:2] == ["--absent"] and len(argv) == 3:
        print("\n".join(class_coverage(argv[2])["absent"]))
    else:
        print(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
