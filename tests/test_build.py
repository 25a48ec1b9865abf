"""The two builds: the package src/agentgit/ that developers edit, and the single file agentgit.py that
`make dist` writes from it and users run. They must be the same program: the generator refuses what
would make them differ, and these tests prove that what it wrote is the modules, verbatim, in order."""
import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, SINGLE_FILE, sweep

pytestmark = sweep
PACKAGE = os.path.join(ROOT, "src", "agentgit")
MODULE_BUDGET, FUNCTION_BUDGET = 1000, 80


def load_generator():
    spec = importlib.util.spec_from_file_location("amalgamate", os.path.join(ROOT, "tools", "amalgamate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


amalgamate = load_generator()
BUILD_ORDER = amalgamate.read_package(ROOT)[1] + ["__main__"]


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_the_committed_single_file_is_what_the_modules_make():
    assert amalgamate.build(ROOT) == read(SINGLE_FILE), "agentgit.py is stale: run `make dist`"


def test_every_line_of_every_module_is_in_the_single_file_verbatim_and_in_order():
    single = read(SINGLE_FILE).splitlines()
    at = 0
    for name in BUILD_ORDER:
        module = amalgamate.Module(ROOT, name)
        for line in module.body.splitlines():
            if line == amalgamate.SCHEMA_LINE:       # the one line make dist replaces: by schema.sql's text
                assert single[at:].count('SCHEMA = """' + read(os.path.join(ROOT, "schema.sql")).splitlines()[0])
                continue
            try:
                at = single.index(line, at) + 1
            except ValueError:
                pytest.fail("%s.py: %r is not in agentgit.py after line %d" % (name, line, at))


def test_the_single_file_opens_with_a_guide_whose_line_numbers_are_right():
    """A reader of agentgit.py starts at its reading path (six stops, each with the lines of the places
    that are it), finds each module by its line range and the schema in the appendix, and can tell
    which sources it was made from."""
    lines = read(SINGLE_FILE).splitlines()
    guide = lines[:lines.index('"""', 1)]
    stops = [line.split() for line in guide if line.startswith("       line ")]
    assert len(stops) >= 12 and len([line for line in guide if re.match(r"  \d\. [A-Za-z]", line)]) == 6
    for _, number, place in stops:
        *_, name = place.split(".")
        assert re.match(r"\s*(def %s\(|class %s\b|%s = )" % (name, name, name), lines[int(number) - 1]), place
    ranges = {}
    for line in guide:
        found = re.match(r"\s+(?:\d+\.)?\s*(\w+)\s+lines\s+(\d+)-\s*(\d+)\s", line)
        if found:
            ranges[found.group(1)] = int(found.group(2)), int(found.group(3))
    assert list(ranges) == BUILD_ORDER[:-1] + ["appendix"]
    for name, (first, last) in ranges.items():
        assert lines[first - 1] == amalgamate.BANNER and lines[last].startswith(amalgamate.BANNER[:10]), name
        title = "# Appendix: schema.sql " if name == "appendix" else "# %d. src/agentgit/%s.py " % (
            BUILD_ORDER.index(name) + 1, name)
        assert lines[first].startswith(title), name
    appendix = lines[ranges["appendix"][0] + 3]
    assert appendix == 'SCHEMA = """' + read(os.path.join(ROOT, "schema.sql")).splitlines()[0]
    sources = [os.path.join(PACKAGE, name + ".py") for name in ["__init__"] + BUILD_ORDER]
    digest = amalgamate.sources_digest(ROOT, sources + [os.path.join(ROOT, "schema.sql")])
    assert "Made from sources whose SHA-256 is %s" % digest in guide


def test_the_single_file_makes_every_import_its_modules_make():
    """import urllib.parse and import urllib.request both bind urllib: each must be hoisted all the same."""
    header = read(SINGLE_FILE).split(amalgamate.BANNER)[0].splitlines()
    froms = {line.split()[1]: set(line.split(" import ")[1].split(", ")) for line in map(str.strip, header)
             if line.startswith("from ")}
    for name in BUILD_ORDER:
        for node in amalgamate.Module(ROOT, name).imports:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert "import " + alias.name in header or alias.name == "pathlib", (name, alias.name)
            elif not node.module.startswith("agentgit"):
                assert {alias.name for alias in node.names} <= froms.get(node.module, set()), (name, node.module)


DUMP = """
import dataclasses, json, agentgit

def plain(value):
    # functions by name (addresses differ between processes), dataclasses as dicts, sets in order
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(value):
        return "<function %s>" % value.__qualname__
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value

print(json.dumps(plain({
    "routes": [[method, r.pattern, r.handler] for method in sorted(agentgit.ROUTES) for r in agentgit.ROUTES[method]],
    "actions": agentgit.ACTIONS, "graphql_types": agentgit.GRAPHQL_TYPES, "graphql_enums": agentgit.GRAPHQL_ENUMS,
    "graphql_inputs": agentgit.GRAPHQL_INPUTS, "migrations": agentgit.MIGRATIONS, "schema": agentgit.SCHEMA,
    "schema_version": agentgit.SCHEMA_VERSION, "names": sorted(n for n in dir(agentgit) if not n.startswith("__")),
})))
"""


def dump(path_entry):
    out = subprocess.run([sys.executable, "-P", "-c", DUMP], env=dict(os.environ, PYTHONPATH=path_entry),
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_both_builds_serve_the_same_routes_actions_graphql_schema_and_migrations():
    package, single = dump(os.path.join(ROOT, "src")), dump(ROOT)
    assert package["routes"] == single["routes"] and len(single["routes"]) > 200
    for key in ("actions", "graphql_types", "graphql_enums", "graphql_inputs", "migrations", "schema_version"):
        assert package[key] == single[key], key
    assert package["schema"] == single["schema"] == read(os.path.join(ROOT, "schema.sql"))
    # one namespace: what a test or an embedding program reaches as agentgit.X is there in both
    # (the package adds its modules, their order, the reading path (the single file's guide), and the
    # pathlib with which storage reads schema.sql)
    assert set(package["names"]) - set(BUILD_ORDER) - {"MODULES", "READING_PATH", "pathlib"} == set(single["names"])


@pytest.mark.parametrize("build", ["file", "package"])
def test_runs_with_docstrings_stripped(build):
    """python -OO drops docstrings: nothing may read one as data (--help, the published policy rules)."""
    command = [sys.executable, "-OO", SINGLE_FILE] if build == "file" else [sys.executable, "-OO", "-P", "-m",
                                                                             "agentgit"]
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"), PYTHONDONTWRITEBYTECODE="1")
    run = lambda *args: subprocess.run(command + list(args), capture_output=True, text=True, env=env,  # noqa: E731
                                       check=True).stdout
    assert "agentgit: a GitHub-compatible Git service" in run("--help")
    assert "--git-engine" in run("serve", "--help")


@pytest.mark.parametrize("build", ["file", "package"])
def test_the_route_index_names_handler_and_module(build):
    command = [sys.executable, SINGLE_FILE] if build == "file" else [sys.executable, "-P", "-m", "agentgit"]
    out = subprocess.run(command + ["routes"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))).stdout.splitlines()
    assert len(out) > 200
    merge = [line.split() for line in out if "/pulls/{number:int}/merge " in line + " "]
    assert ["PUT", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/merge", "rest", "token", "merge_pull",
            "(pulls)"] in merge
    assert any(line.split()[-1] == "(oauth)" and "/login/device/code" in line for line in out)


# what opens a connection to another host (a database connection is a file's; a Unix socket this machine's)
OUTBOUND = re.compile(r"create_connection|HTTPS?Connection\(|urllib\.request|socket\.socket\((?!socket\.AF_UNIX)|"
                      r"asyncio\.open_connection")


def test_every_outbound_connection_goes_through_egress():
    """Only egress connects to other hosts, to an address it checked and pinned; a module that opened its
    own connection would skip the check. (The client commands, clients and cli, run on the user's machine.)"""
    assert OUTBOUND.search(read(os.path.join(PACKAGE, "egress.py")))
    opening = [name for name in BUILD_ORDER if name not in ("egress", "clients", "cli")
               and OUTBOUND.search(server_side(name))]
    assert opening == []


def server_side(name):
    """A module's text but for the programs the runner starts for jobs (artifacts' STANDIN_PROGRAM, the
    job's side of its network namespace), which connect from the job, not from the server."""
    return re.sub(r"[A-Z_]+_PROGRAM = r\'\'\'.*?\'\'\'", "", read(os.path.join(PACKAGE, name + ".py")), flags=re.S)


def test_modules_and_functions_stay_within_their_budgets():
    over = []
    for name in BUILD_ORDER:
        source = read(os.path.join(PACKAGE, name + ".py"))
        if source.count("\n") > MODULE_BUDGET:
            over.append("%s.py has %d lines" % (name, source.count("\n")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                if node.end_lineno - first + 1 > FUNCTION_BUDGET:
                    over.append("%s.py: %s has %d lines" % (name, node.name, node.end_lineno - first + 1))
    assert over == []


# -- what the generator refuses: each case edits one module of a copy of the package --------------------

REFUSALS = [
    ("config", "\nfrom agentgit.cli import main\n", "cli, which is not before it in the build order"),
    ("storage", "\nfrom agentgit.config import now as moment\n", "an aliased import"),
    ("audit", "\n\ndef later_import():\n    from agentgit.config import now\n    return now\n",
     "function-local import of the package"),
    ("errors", "\nfrom agentgit.config import insert_row\n", "insert_row is not defined in agentgit.config"),
    ("users", "\n\ndef now():\n    return 0\n", "now is defined in agentgit.config too"),
    ("users", "\n\ndef where():\n    return __file__\n", "__file__ means something else"),
    ("users", "\n\ndef names():\n    return globals()\n", "globals() sees another namespace"),
    ("users", "\n\ndef missing():\n    return decide_later()\n", "uses decide_later, which it neither defines"),
    ("users", "\n\ndef search():\n    return 0\n", "search is also the name of a module"),
    ("errors", "\nimport zlib\n", "imports zlib and does not use it"),
]


@pytest.mark.parametrize("module, addition, refusal", REFUSALS, ids=[r[2].split(",")[0] for r in REFUSALS])
def test_the_generator_refuses(tmp_path, module, addition, refusal):
    shutil.copytree(PACKAGE, tmp_path / "src" / "agentgit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "schema.sql"), tmp_path / "schema.sql")
    path = tmp_path / "src" / "agentgit" / (module + ".py")
    text = path.read_text()
    if addition.startswith(("\nfrom", "\nimport")):      # an import joins the import block
        head, _, body = text.partition("\n\n\n")
        text = head + addition + "\n\n" + body
    else:
        text += addition
    path.write_text(text)
    with pytest.raises(amalgamate.BuildError, match="src/agentgit/%s.py" % module) as error:
        amalgamate.build(str(tmp_path))
    assert refusal in str(error.value)
