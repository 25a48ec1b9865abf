"""GraphQL language: lexer, parser and the limits that refuse hostile documents."""

import json
import re


# A hand-written lexer and recursive-descent parser for GraphQL's executable grammar (operations,
# variables with defaults, fragments, inline fragments, aliases, directives, every literal kind), and
# an executor over a typed schema table whose types and fields keep GitHub's names and type strings
# (a test checks them against GitHub's schema). Resolvers reuse the REST serializers and decide().
# Size, depth and node-count limits refuse hostile documents before anything runs.

GRAPHQL_MAX_DOCUMENT = 100000        # characters
GRAPHQL_MAX_DEPTH = 25               # nested selection sets, list types and list or object values
GRAPHQL_MAX_NUMBER = 100             # characters of one number (int() of thousands of digits is slow, then refused)
GRAPHQL_MAX_TOKENS = 20000
GRAPHQL_MAX_NODES = 500000           # GitHub's own limit on the nodes one query may ask for
GRAPHQL_TOKEN_RE = re.compile(r'''
    (?P<skip>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<spread>\.\.\.)
  | (?P<punct>[!$&():=@\[\]{|}])
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<block>"""(?:\\"""|(?!""")[\s\S])*""")
  | (?P<string>"(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})|[^"\\\n\r])*")
''', re.VERBOSE)


class GraphQLError(Exception):
    def __init__(self, message, location=None, path=None, kind=None):
        super().__init__(message)
        self.message, self.location, self.path, self.kind = message, location, path, kind

    def json(self):
        out = {"message": self.message}
        if self.location:
            out["locations"] = [{"line": self.location[0], "column": self.location[1]}]
        if self.path is not None:
            out["path"] = self.path
        if self.kind:
            out["type"] = self.kind
        return out


def graphql_tokens(source):
    """[(kind, text, (line, column))], ending with an ("eof", "", loc) token."""
    tokens, pos, line, line_start = [], 0, 1, 0
    while pos < len(source):
        m = GRAPHQL_TOKEN_RE.match(source, pos)
        where = (line, pos - line_start + 1)
        if not m:
            raise GraphQLError("Unterminated string" if source[pos] == '"' else
                               "Unexpected character %r" % source[pos], where, kind="PARSE")
        kind, text = m.lastgroup, m.group()
        if kind != "skip":
            tokens.append((kind, text, where))
            if len(tokens) > GRAPHQL_MAX_TOKENS:
                raise GraphQLError("The document has more than %d tokens" % GRAPHQL_MAX_TOKENS, where, kind="PARSE")
        newlines = text.count("\n")
        if newlines:
            line, line_start = line + newlines, pos + text.rindex("\n") + 1
        pos = m.end()
    tokens.append(("eof", "", (line, pos - line_start + 1)))
    return tokens


def graphql_string(kind, text):
    if kind == "block":
        lines = text[3:-3].replace('\\"""', '"""').split("\n")
        indent = min((len(l) - len(l.lstrip()) for l in lines[1:] if l.strip()), default=0)
        lines = [lines[0]] + [l[indent:] for l in lines[1:]]
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        return "\n".join(lines)
    return json.loads(text)


class GraphQLParser:
    """Recursive descent over the token list. Nodes are small dicts; values are (kind, payload)."""

    def __init__(self, source):
        if len(source) > GRAPHQL_MAX_DOCUMENT:
            raise GraphQLError("The document is longer than %d characters" % GRAPHQL_MAX_DOCUMENT, kind="PARSE")
        self.tokens, self.i, self.depth = graphql_tokens(source), 0, 0

    def peek(self, text=None, kind=None):
        tok = self.tokens[self.i]
        return (text is None or tok[1] == text and tok[0] in ("punct", "name", "spread")) and (
            kind is None or tok[0] == kind)

    def take(self, text=None, kind=None):
        tok = self.tokens[self.i]
        if not self.peek(text, kind):
            wanted = text or kind
            raise GraphQLError("Expected %s, found %s" % (wanted, tok[1] or "the end of the document"), tok[2],
                               kind="PARSE")
        self.i += 1
        return tok

    def document(self):
        operations, fragments = [], {}
        while not self.peek(kind="eof"):
            if self.peek("fragment"):
                loc = self.take()[2]
                name = self.take(kind="name")[1]
                if name == "on":
                    raise GraphQLError("A fragment cannot be named 'on'", loc, kind="PARSE")
                self.take("on")
                fragment = {"name": name, "on": self.take(kind="name")[1], "directives": self.directives(),
                            "selections": self.selection_set(), "loc": loc}
                if name in fragments:
                    raise GraphQLError("There can be only one fragment named %r" % name, loc, kind="PARSE")
                fragments[name] = fragment
            elif self.peek("{") or self.peek("query") or self.peek("mutation") or self.peek("subscription"):
                operations.append(self.operation())
            else:
                tok = self.tokens[self.i]
                raise GraphQLError("Unexpected %s" % tok[1], tok[2], kind="PARSE")
        if not operations:
            raise GraphQLError("The document has no operation", kind="PARSE")
        return operations, fragments

    def operation(self):
        loc = self.tokens[self.i][2]
        if self.peek("{"):
            return {"type": "query", "name": None, "variables": [], "directives": [],
                    "selections": self.selection_set(), "loc": loc}
        op = self.take()[1]
        name = self.take(kind="name")[1] if self.peek(kind="name") else None
        variables = []
        if self.peek("("):
            self.take("(")
            while not self.peek(")"):
                self.take("$")
                var_loc = self.tokens[self.i][2]
                var = self.take(kind="name")[1]
                self.take(":")
                var_type = self.type_ref()
                default = None
                if self.peek("="):
                    self.take("=")
                    default = self.value(const=True)
                self.directives()
                variables.append((var, var_type, default, var_loc))
            self.take(")")
        return {"type": op, "name": name, "variables": variables, "directives": self.directives(),
                "selections": self.selection_set(), "loc": loc}

    def nesting(self, loc):
        """Selection sets, list types and list or object values all count against one depth limit, so
        no document can recurse the parser past it."""
        self.depth += 1
        if self.depth > GRAPHQL_MAX_DEPTH:
            raise GraphQLError("The document nests deeper than %d levels" % GRAPHQL_MAX_DEPTH, loc, kind="PARSE")

    def type_ref(self):
        if self.peek("["):
            self.nesting(self.take("[")[2])
            inner = self.type_ref()
            self.take("]")
            self.depth -= 1
            text = "[%s]" % inner
        else:
            text = self.take(kind="name")[1]
        if self.peek("!"):
            self.take("!")
            text += "!"
        return text

    def selection_set(self):
        loc = self.take("{")[2]
        self.nesting(loc)
        selections = []
        while not self.peek("}"):
            selections.append(self.selection())
        self.take("}")
        self.depth -= 1
        if not selections:
            raise GraphQLError("A selection set cannot be empty", loc, kind="PARSE")
        return selections

    def selection(self):
        loc = self.tokens[self.i][2]
        if self.peek(kind="spread"):
            self.take()
            if self.peek(kind="name") and not self.peek("on"):
                return {"kind": "spread", "name": self.take()[1], "directives": self.directives(), "loc": loc}
            on = None
            if self.peek("on"):
                self.take("on")
                on = self.take(kind="name")[1]
            return {"kind": "inline", "on": on, "directives": self.directives(), "selections": self.selection_set(),
                    "loc": loc}
        name = self.take(kind="name")[1]
        alias = name
        if self.peek(":"):
            self.take(":")
            name = self.take(kind="name")[1]
        return {"kind": "field", "alias": alias, "name": name, "args": self.arguments(), "loc": loc,
                "directives": self.directives(), "selections": self.selection_set() if self.peek("{") else None}

    def arguments(self, const=False):
        args = {}
        if self.peek("("):
            self.take("(")
            while not self.peek(")"):
                name = self.take(kind="name")[1]
                self.take(":")
                args[name] = self.value(const)
            self.take(")")
        return args

    def directives(self):
        out = []
        while self.peek("@"):
            self.take("@")
            out.append((self.take(kind="name")[1], self.arguments()))
        return out

    def value(self, const=False):
        kind, text, loc = self.tokens[self.i]
        if self.peek("$"):
            if const:
                raise GraphQLError("A variable cannot stand in a default value", loc, kind="PARSE")
            self.take()
            return ("var", self.take(kind="name")[1])
        if self.peek("["):
            self.nesting(self.take("[")[2])
            items = []
            while not self.peek("]"):
                items.append(self.value(const))
            self.take("]")
            self.depth -= 1
            return ("list", items)
        if self.peek("{"):
            self.nesting(self.take("{")[2])
            fields = {}
            while not self.peek("}"):
                key = self.take(kind="name")[1]
                self.take(":")
                fields[key] = self.value(const)
            self.take("}")
            self.depth -= 1
            return ("object", fields)
        self.i += 1
        if kind == "number":
            if len(text) > GRAPHQL_MAX_NUMBER:
                raise GraphQLError("A number of more than %d characters" % GRAPHQL_MAX_NUMBER, loc, kind="PARSE")
            return ("float", float(text)) if any(c in text for c in ".eE") else ("int", int(text))
        if kind in ("string", "block"):
            return ("string", graphql_string(kind, text))
        if kind == "name":
            return {"true": ("bool", True), "false": ("bool", False), "null": ("null", None)}.get(text, ("enum", text))
        raise GraphQLError("Unexpected %s" % (text or "end of document"), loc, kind="PARSE")


def unprocessable(error):
    """A REST validation failure as a GraphQL error with its reasons."""
    return GraphQLError("; ".join(e.get("message", e.get("code", "")) for e in error.errors or []) or error.message,
                        kind="UNPROCESSABLE")
