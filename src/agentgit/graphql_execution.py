"""GraphQL execution: coercion, field collection, completion, introspection and the endpoint."""

from agentgit.errors import HTTPError
from agentgit.policy import SITE
from agentgit.routing import route
from agentgit.lookups import signed_in
from agentgit.graphql_language import GRAPHQL_MAX_NODES, GraphQLError, GraphQLParser
from agentgit.graphql_resolvers import GField
from agentgit.graphql_schema import GRAPHQL_ENUMS, GRAPHQL_INPUTS, GRAPHQL_TYPES


# -- execution ---------------------------------------------------------------------------------

class NullBubble(Exception):
    """A non-null field came out null: its parent becomes null (GraphQL's null propagation)."""


class GraphQLContext:
    def __init__(self, req, fragments, variables):
        self.req, self.app, self.fragments, self.variables, self.errors = req, req.app, fragments, variables, []
        self.nodes = 0      # the most nodes the query may return (Query.rateLimit's nodeCount)


def coerce_value(ctx, node, type_str, where):
    """An AST value to a Python value of ``type_str``. Variables (already coerced to their declared
    types) stand anywhere, also inside lists and input objects."""
    if node[0] == "var":
        return ctx.variables.get(node[1])
    return coerce_input(literal_value(node, ctx.variables), type_str, where)


def literal_value(node, variables=None):
    kind, payload = node
    if kind == "var":
        return (variables or {}).get(payload)
    if kind == "list":
        return [literal_value(v, variables) for v in payload]
    if kind == "object":
        return {k: literal_value(v, variables) for k, v in payload.items()}
    return payload


def coerce_input(value, type_str, where):
    """JSON or literal input to ``type_str``: non-null checked, a single value taken as a list of one,
    scalars and enums checked for kind."""
    if type_str.endswith("!"):
        if value is None:
            raise GraphQLError("%s: expected a non-null %s" % (where, type_str[:-1]), kind="INVALID_ARGUMENT")
        return coerce_input(value, type_str[:-1], where)
    if value is None:
        return None
    if type_str.startswith("["):
        inner = type_str[1:-1]
        return [coerce_input(v, inner, where) for v in (value if isinstance(value, list) else [value])]
    if type_str in GRAPHQL_INPUTS:
        fields = GRAPHQL_INPUTS[type_str]
        if not isinstance(value, dict) or set(value) - set(fields):
            raise GraphQLError("%s: expected a %s with fields %s" % (where, type_str, ", ".join(fields)),
                               kind="INVALID_ARGUMENT")
        return {k: coerce_input(value.get(k), t, "%s.%s" % (where, k)) for k, t in fields.items()}
    ok = {"Int": lambda v: isinstance(v, int) and not isinstance(v, bool) and -2 ** 31 <= v < 2 ** 31,
          "Float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "Boolean": lambda v: isinstance(v, bool)}.get(type_str, lambda v: isinstance(v, str))
    if not ok(value) or (type_str in GRAPHQL_ENUMS and value not in GRAPHQL_ENUMS[type_str]):
        raise GraphQLError("%s: %r is not a valid %s" % (where, value, type_str), kind="INVALID_ARGUMENT")
    return value


def applies(type_condition, typename):
    if type_condition is None or type_condition == typename:
        return True
    spec = GRAPHQL_TYPES.get(type_condition, {})
    return typename in spec.get("possibleTypes", ())


def included(ctx, directives):
    for name, args in directives:
        if name in ("skip", "include"):
            flag = coerce_value(ctx, args.get("if", ("bool", False)), "Boolean!", "@%s(if:)" % name)
            if (name == "skip") == bool(flag):
                return False
    return True


def collect_fields(ctx, typename, selections, out, visited):
    """{response key: [field nodes]} in document order, through fragments that apply to ``typename``."""
    for sel in selections:
        if not included(ctx, sel["directives"]):
            continue
        if sel["kind"] == "field":
            out.setdefault(sel["alias"], []).append(sel)
        elif sel["kind"] == "inline":
            if applies(sel["on"], typename):
                collect_fields(ctx, typename, sel["selections"], out, visited)
        else:
            fragment = ctx.fragments.get(sel["name"])
            if fragment is None:
                raise GraphQLError("Unknown fragment %r" % sel["name"], sel["loc"], kind="PARSE")
            if sel["name"] in visited:
                raise GraphQLError("Fragment %r spreads itself" % sel["name"], sel["loc"], kind="PARSE")
            if applies(fragment["on"], typename):
                collect_fields(ctx, typename, fragment["selections"], out, visited | {sel["name"]})
    return out


def execute_fields(ctx, typename, obj, selections, path):
    result = {}
    for key, nodes in collect_fields(ctx, typename, selections, {}, frozenset()).items():
        node = nodes[0]
        if node["name"] == "__typename":
            result[key] = typename
            continue
        field = GRAPHQL_TYPES[typename]["fields"].get(node["name"]) if node["name"] != "__type" else GField(
            "__Type", resolve_type_introspection, {"name": "String!"})
        if field is None:
            raise GraphQLError("Field '%s' doesn't exist on type '%s'" % (node["name"], typename), node["loc"],
                               path + [key], "undefinedField")
        try:
            unknown = set(node["args"]) - set(field.args)
            if unknown:
                raise GraphQLError("Field '%s' doesn't accept argument '%s'" % (node["name"], sorted(unknown)[0]),
                                   node["loc"], kind="argumentNotAccepted")
            args = {}
            for name, arg_type in field.args.items():
                if name in node["args"]:
                    args[name] = coerce_value(ctx, node["args"][name], arg_type, "argument %s" % name)
                elif arg_type.endswith("!"):
                    raise GraphQLError("Field '%s' is missing required argument '%s'" % (node["name"], name),
                                       node["loc"], kind="missingRequiredArguments")
            value = field.resolve(ctx, obj, args) if field.resolve else obj.get(node["name"])
            result[key] = complete(ctx, field.type, value, [s for n in nodes for s in (n["selections"] or [])],
                                   path + [key], node)
        except HTTPError as error:
            ctx.errors.append(GraphQLError(error.message, node["loc"], path + [key],
                                           {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND"}.get(
                                               error.status, "UNPROCESSABLE" if error.status < 500 else "INTERNAL")))
            if ctx.req.pending or ctx.req.intents:   # a mutation failed after it was allowed: record how it ended
                ctx.req.settle("refused: %d %s" % (error.status, error.message), failed=True)
            result[key] = None
        except GraphQLError as error:
            error.location, error.path = error.location or node["loc"], error.path or path + [key]
            ctx.errors.append(error)
            result[key] = None
        except NullBubble:
            result[key] = None
        if result[key] is None and field is not None and field.type.endswith("!"):
            raise NullBubble()
    return result


def complete(ctx, type_str, value, selections, path, node):
    if type_str.endswith("!"):
        out = complete(ctx, type_str[:-1], value, selections, path, node)
        if out is None:
            if not ctx.errors or ctx.errors[-1].path != path:
                ctx.errors.append(GraphQLError("Cannot return null for non-nullable field", node["loc"], path))
            raise NullBubble()
        return out
    if value is None:
        return None
    if type_str.startswith("["):
        try:
            return [complete(ctx, type_str[1:-1], item, selections, path + [i], node) for i, item in enumerate(value)]
        except NullBubble:
            return None
    spec = GRAPHQL_TYPES.get(type_str) or INTROSPECTION_TYPES.get(type_str)
    if spec is None:            # a scalar or an enum
        if selections:
            raise GraphQLError("Selections can't be made on scalars (field '%s' returns %s)" % (
                node["name"], type_str), node["loc"], path, "selectionMismatch")
        return value
    if not selections:
        raise GraphQLError("Field must have selections (field '%s' returns %s)" % (node["name"], type_str),
                           node["loc"], path, "selectionMismatch")
    typename = value.get("__typename", type_str)
    return execute_fields(ctx, typename, value, selections, path)


def estimated_nodes(ctx, selections, visited=frozenset(), fragment_costs=None):
    """How many nodes a selection set may return at most: each field counts once, times the page
    size its first/last asks for, times what is selected inside it (fragments included). Each
    fragment is costed once (``fragment_costs``), so fragments that spread each other twice over cost
    a count that grows, not the time to reach it."""
    fragment_costs = {} if fragment_costs is None else fragment_costs
    total = 0
    for sel in selections:
        if sel["kind"] == "spread":
            fragment = ctx.fragments.get(sel["name"])
            if fragment is not None and sel["name"] not in visited:
                if sel["name"] not in fragment_costs:
                    fragment_costs[sel["name"]] = estimated_nodes(ctx, fragment["selections"], visited | {sel["name"]},
                                                                  fragment_costs)
                total += fragment_costs[sel["name"]]
            continue
        if sel["kind"] == "inline":
            total += estimated_nodes(ctx, sel["selections"], visited, fragment_costs)
            continue
        page = 1
        for key in ("first", "last"):
            if key in sel["args"]:
                value = coerce_value(ctx, sel["args"][key], "Int", key)
                page = max(page, value if isinstance(value, int) else 1)
        total += page * (1 + (estimated_nodes(ctx, sel["selections"], visited, fragment_costs)
                              if sel["selections"] else 0))
    return total


def execute_graphql(req, query, variables, operation_name):
    """{"data": ..., "errors": [...]} as GitHub answers: parse and validation errors come with no data."""
    if not isinstance(query, str):
        return {"errors": [{"message": "A query string is required", "type": "PARSE"}]}
    try:
        operations, fragments = GraphQLParser(query).document()
        if operation_name:
            operations = [op for op in operations if op["name"] == operation_name]
            if not operations:
                raise GraphQLError("Unknown operation named %r" % operation_name)
        elif len(operations) > 1:
            raise GraphQLError("An operationName is required when the document holds several operations")
        operation = operations[0]
        if operation["type"] not in ("query", "mutation"):
            raise GraphQLError("Subscriptions are not served", operation["loc"])
        ctx = GraphQLContext(req, fragments, {})
        given = variables if isinstance(variables, dict) else {}
        for name, type_str, default, loc in operation["variables"]:       # undeclared variables are ignored
            if name in given:
                ctx.variables[name] = coerce_input(given[name], type_str, "Variable $%s" % name)
            elif default is not None:
                ctx.variables[name] = coerce_input(literal_value(default), type_str, "Variable $%s" % name)
            elif type_str.endswith("!"):
                raise GraphQLError("Variable $%s of type %s was provided invalid value" % (name, type_str), loc)
        ctx.nodes = nodes = estimated_nodes(ctx, operation["selections"])
        if nodes > GRAPHQL_MAX_NODES:
            raise GraphQLError("This query requests up to %d nodes, more than the %d allowed; ask for smaller pages"
                               % (nodes, GRAPHQL_MAX_NODES), operation["loc"], kind="MAX_NODE_LIMIT_EXCEEDED")
    except GraphQLError as error:
        return {"errors": [error.json()]}
    try:
        # Mutation fields run one after another in document order, as the spec asks; so do queries here.
        data = execute_fields(ctx, "Mutation" if operation["type"] == "mutation" else "Query", {},
                              operation["selections"], [])
    except NullBubble:
        data = None
    except GraphQLError as error:
        ctx.errors.append(error)
        data = None
    out = {"data": data}
    if ctx.errors:
        out["errors"] = [e.json() for e in ctx.errors]
    return out


# -- introspection: enough for clients that detect features with __type(name:) ----------------------

def resolve_type_introspection(ctx, parent, args):
    spec = GRAPHQL_TYPES.get(args["name"])
    if spec is None:
        return None
    fields = [{"__typename": "__Field", "name": name, "isDeprecated": False, "deprecationReason": None,
               "args": [{"__typename": "__InputValue", "name": a} for a in f.args]}
              for name, f in sorted(spec["fields"].items())]
    return {"__typename": "__Type", "name": args["name"], "kind": spec["kind"], "fields": fields,
            "possibleTypes": [{"__typename": "__Type", "name": t, "kind": "OBJECT", "fields": []}
                              for t in spec.get("possibleTypes", [])]}


INTROSPECTION_TYPES = {
    "__Type": {"kind": "OBJECT", "fields": {
        "name": GField("String"), "kind": GField("__TypeKind!"),
        "fields": GField("[__Field!]", lambda ctx, parent, args: parent["fields"], {"includeDeprecated": "Boolean"}),
        "possibleTypes": GField("[__Type!]")}},
    "__Field": {"kind": "OBJECT", "fields": {
        "name": GField("String!"), "isDeprecated": GField("Boolean!"), "deprecationReason": GField("String"),
        "args": GField("[__InputValue!]!")}},
    "__InputValue": {"kind": "OBJECT", "fields": {"name": GField("String!")}},
}
GRAPHQL_TYPES.update(INTROSPECTION_TYPES)


@route("POST", "/api/graphql", "graphql")
def graphql_endpoint(req):
    body = req.json()
    signed_in(req)
    req.check("read_meta", SITE)
    return execute_graphql(req, body.get("query"), body.get("variables"), body.get("operationName"))
