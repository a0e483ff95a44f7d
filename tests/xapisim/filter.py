"""xapi's filter language for ``<Class>.get_all_records_where``.

Facts from xapi's own grammar (ocaml/database/db_filter_lex.mll, db_filter_parse.mly,
db_filter.ml), re-implemented here:

  value := "literal" | field "name"
  expr  := value = value | expr and expr | expr or expr | not expr | true | false | ( expr )

- Strings are double-quoted, no escapes; whitespace is space, tab, newline.
- ``and`` and ``or`` share ONE precedence level and associate to the left, so
  ``a or b and c`` means ``(a or b) and c``.
- ``not`` binds weaker than both (it is declared first in the .mly), so ``not a and b`` means
  ``not (a and b)``.
- Values compare as the strings the database stores: booleans ``true``/``false``, ints in
  decimal, sets and maps in xapi's S-expression form.
"""

from tests.xapisim.errors import XapiError

_KEYWORDS = ("true", "false", "field", "and", "or", "not")


class FilterError(Exception):
    pass


def tokenize(text):
    tokens = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in " \t\n":
            i += 1
        elif ch in "=()":
            tokens.append((ch, None))
            i += 1
        elif ch == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise FilterError("unterminated string at %d" % i)
            tokens.append(("IDENT", text[i + 1:end]))
            i = end + 1
        else:
            for word in _KEYWORDS:
                if text.startswith(word, i):
                    tokens.append((word, None))
                    i += len(word)
                    break
            else:
                raise FilterError("unexpected character %r at %d" % (ch, i))
    tokens.append(("EOF", None))
    return tokens


class _Parser:
    def __init__(self, tokens):
        self.tokens = tokens
        self.pos = 0

    def peek(self):
        return self.tokens[self.pos][0]

    def take(self, kind):
        token = self.tokens[self.pos]
        if token[0] != kind:
            raise FilterError("expected %s, found %s" % (kind, token[0]))
        self.pos += 1
        return token[1]

    def parse(self):
        expr = self.expr()
        self.take("EOF")
        return expr

    def expr(self):
        """A chain of primaries joined by and/or, grouped from the left."""
        left = self.primary()
        while self.peek() in ("and", "or"):
            op = self.peek()
            self.pos += 1
            right = self.primary()
            left = (op, left, right)
        return left

    def primary(self):
        kind = self.peek()
        if kind == "not":
            self.pos += 1
            return ("not", self.expr())  # not takes everything to its right
        if kind == "true" or kind == "false":
            self.pos += 1
            return (kind,)
        if kind == "(":
            self.pos += 1
            inner = self.expr()
            self.take(")")
            return inner
        left = self.value()
        self.take("=")
        return ("eq", left, self.value())

    def value(self):
        if self.peek() == "field":
            self.pos += 1
            return ("field", self.take("IDENT"))
        return ("literal", self.take("IDENT"))


def parse(text):
    return _Parser(tokenize(text)).parse()


def db_string(value):
    """A field value as xapi's database stores it (the form filters compare against)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "(" + " ".join("'%s'" % v for v in value) + ")"
    if isinstance(value, dict):
        return "(" + " ".join("('%s' '%s')" % kv for kv in value.items()) + ")"
    return str(value)


def evaluate(expr, record):
    op = expr[0]
    if op == "true":
        return True
    if op == "false":
        return False
    if op == "not":
        return not evaluate(expr[1], record)
    if op == "and":
        return evaluate(expr[1], record) and evaluate(expr[2], record)
    if op == "or":
        return evaluate(expr[1], record) or evaluate(expr[2], record)
    return _value(expr[1], record) == _value(expr[2], record)


def _value(value, record):
    kind, text = value
    if kind == "literal":
        return text
    if text not in record:
        raise XapiError("INTERNAL_ERROR", "Db_exn.DBCache_NotFound(\"missing field\", \"%s\")" % text)
    return db_string(record[text])


def compile_filter(text):
    """Parse or raise the error a client sees for a malformed expression."""
    try:
        return parse(text)
    except FilterError as exc:
        raise XapiError("INTERNAL_ERROR",
                        "Db_filter.Expression_error(\"%s\", %s)" % (text, exc)) from None
