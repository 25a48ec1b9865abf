#!/usr/bin/env python3
"""Writes the single file agentgit.py from the package src/agentgit/, as SQLite's mksqlite3c.tcl does.

    python tools/amalgamate.py            # (re)write agentgit.py
    python tools/amalgamate.py --check    # exit 1 when agentgit.py is not what the modules make

The single file is the modules' bodies verbatim, in the build order that src/agentgit/__init__.py
names (MODULES), each under a banner naming its source module and the modules it uses; their
standard-library and dulwich imports are hoisted to the top, their imports of each other dropped
(one namespace needs none), and schema.sql is embedded where storage reads it. The section map in
the file's docstring is written from the modules' docstrings, so it cannot drift.

It refuses, naming the module and line, what would make the two builds differ: an import of a later
module (or a cycle), an aliased or function-local import of the package, a name imported from a
module that does not define it, a top-level name defined in two modules (or named like a module),
a name a module uses but neither defines nor imports (or imports and does not use), and the module dunders (__file__, __doc__,
globals() ...) whose meaning changes when the modules become one file.
"""

import ast
import builtins
import hashlib
import os
import re
import symtable
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # the checkout: src/, schema.sql
# storage.py reads schema.sql with this one line; the single file carries the text there instead.
SCHEMA_LINE = 'SCHEMA = pathlib.Path(__file__).parents[2].joinpath("schema.sql").read_text(encoding="utf-8")'
MODULE_DUNDERS = {"__file__", "__doc__", "__spec__", "__path__", "__package__", "__loader__", "__name__",
                  "__builtins__", "__cached__"}
NAMESPACE_CALLS = {"globals", "locals", "vars"}
BANNER = "# " + "═" * 100


class BuildError(Exception):
    pass


def first_sentence(docstring):
    """A docstring's first sentence, its lines joined: the module's title in the section map and banners."""
    paragraph = " ".join(line.strip() for line in docstring.strip().split("\n\n")[0].splitlines())
    end = paragraph.find(". ")
    return paragraph[:end + 1] if end >= 0 else paragraph


class Module:
    """One source module split into its docstring, its imports and its body."""

    def __init__(self, root, name):
        self.name = name
        self.path = os.path.join(root, "src", "agentgit", name + ".py")
        with open(self.path, encoding="utf-8") as f:
            self.source = f.read()
        self.tree = ast.parse(self.source, self.path)
        body = self.tree.body
        if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            raise self.error(1, "opens without a docstring")
        self.docstring = body[0].value.value
        self.title = first_sentence(self.docstring)
        count = 1
        while count < len(body) and isinstance(body[count], (ast.Import, ast.ImportFrom)):
            count += 1
        self.imports, rest = body[1:count], body[count:]
        lines = self.source.splitlines(keepends=True)
        # the body: everything after the import block, comments included, verbatim
        self.body_start = (self.imports[-1] if self.imports else body[0]).end_lineno + 1
        self.body = "".join(lines[self.body_start - 1:]).strip("\n") + "\n"
        self.rest = rest

    def error(self, line, message):
        return BuildError("src/agentgit/%s.py:%d: %s" % (self.name, line, message))

    def defined(self):
        """The top-level names this module binds outside its imports."""
        names = set()
        for node in self.rest:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                raise self.error(node.lineno, "imports belong at the top of the module, after its docstring")
        return names

    def used(self):
        return referenced_globals(self.source, self.path)


def referenced_globals(source, filename):
    """The global names the code reads (symtable: locals and parameters are not globals)."""
    used = set()

    def walk(table):
        for symbol in table.get_symbols():
            if symbol.is_referenced() and (table.get_type() == "module" or symbol.is_global()):
                used.add(symbol.get_name())
        for child in table.get_children():
            walk(child)
    walk(symtable.symtable(source, filename, "exec"))
    return used


def check_dunders(module, allowed=()):
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Name) and node.id in MODULE_DUNDERS and node.id not in allowed:
            if module.source.splitlines()[node.lineno - 1] == SCHEMA_LINE:
                continue
            raise module.error(node.lineno, "%s means something else once the modules are one file" % node.id)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in NAMESPACE_CALLS \
                and not node.args:
            raise module.error(node.lineno, "%s() sees another namespace once the modules are one file" % node.func.id)
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in module.imports:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n == "agentgit" or n.startswith("agentgit.") for n in names):
                raise module.error(node.lineno, "a function-local import of the package; import at the top")


PACKAGE_NAMES = ("MODULES", "DEPENDENCY_MISSING", "READING_PATH")


def read_package(root):
    """From src/agentgit/__init__.py: its docstring, MODULES (the build order), DEPENDENCY_MISSING and
    READING_PATH."""
    with open(os.path.join(root, "src", "agentgit", "__init__.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
             and isinstance(node.targets[0], ast.Name) and node.targets[0].id in PACKAGE_NAMES}
    if len(found) != len(PACKAGE_NAMES):
        raise BuildError("src/agentgit/__init__.py must name %s" % ", ".join(PACKAGE_NAMES))
    return (ast.get_docstring(tree, clean=False), list(found["MODULES"]), found["DEPENDENCY_MISSING"],
            found["READING_PATH"])


def build(root=ROOT):
    """The text of agentgit.py, or BuildError."""
    package_doc, order, dependency_missing, reading_path = read_package(root)
    modules = [Module(root, name) for name in order] + [Module(root, "__main__")]
    owner = {}                     # top-level name -> module that defines it
    external = {}                  # hoisted `from x import name`: name -> x
    packages = set()               # hoisted `import x.y`: the dotted names (each binds x)
    uses = {}
    for position, module in enumerate(modules):
        check_dunders(module, allowed={"__name__"} if module.name == "__main__" else ())
        imported, uses[module.name] = set(), []
        for node in module.imports:
            for alias in node.names:
                if alias.asname:
                    raise module.error(node.lineno, "an aliased import (%s as %s)" % (alias.name, alias.asname))
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "agentgit":
                        raise module.error(node.lineno, "import names from a module: from agentgit.x import name")
                    packages.add(alias.name)
                    imported.add(alias.name.split(".")[0])
                continue
            source = node.module or ""
            if node.level:
                raise module.error(node.lineno, "a relative import; write from agentgit.x import name")
            if source == "agentgit" or not source.startswith("agentgit."):
                if source == "agentgit":
                    raise module.error(node.lineno, "import from the module that defines the name")
                for alias in node.names:
                    if external.setdefault(alias.name, source) != source:
                        raise module.error(node.lineno, "%s is imported from two places" % alias.name)
                    imported.add(alias.name)
                continue
            target = source.split(".", 1)[1]
            earlier = [m.name for m in modules[:position]]
            if target not in earlier:
                raise module.error(node.lineno, "imports from %s, which is not before it in the build order "
                                   "(an upward import or a cycle)" % target)
            uses[module.name].append(target)
            for alias in node.names:
                if owner.get(alias.name) != target:
                    raise module.error(node.lineno, "%s is not defined in agentgit.%s" % (alias.name, target))
                imported.add(alias.name)
        for name in module.defined():
            if name in owner:
                raise module.error(1, "%s is defined in agentgit.%s too" % (name, owner[name]))
            if name in order:
                raise module.error(1, "%s is also the name of a module" % name)
            if name in external or name in {p.split(".")[0] for p in packages}:
                raise module.error(1, "%s is also an imported name" % name)
            owner[name] = module.name
        known = module.defined() | imported | set(dir(builtins)) | MODULE_DUNDERS
        for name in sorted(module.used() - known):
            raise module.error(1, "uses %s, which it neither defines nor imports" % name)
        for name in sorted(imported - module.used()):
            raise module.error(1, "imports %s and does not use it" % name)

    with open(os.path.join(root, "schema.sql"), encoding="utf-8") as f:
        schema = f.read()
    if '"""' in schema or "\\" in schema:
        raise BuildError("schema.sql holds a triple quote or a backslash and cannot be embedded as written")
    storage = next(m for m in modules if m.name == "storage")
    if SCHEMA_LINE not in storage.body.splitlines():
        raise BuildError("src/agentgit/storage.py no longer reads schema.sql with the line make dist replaces")
    # the schema's text is an appendix near the end, out of the reader's way; storage reads SCHEMA only
    # when a database opens, after the whole file has run
    storage.body = storage.body.replace(SCHEMA_LINE, SCHEMA_POINTER)
    # hoisted: what the single file's code uses (storage's pathlib reads schema.sql only in the package)
    used = referenced_globals("\n".join(m.body for m in modules), "agentgit.py")
    packages = {spec for spec in packages if spec.split(".")[0] in used}

    plain = sorted(packages)
    froms = {}
    for name, source in external.items():
        if name in used:
            froms.setdefault(source, []).append(name)
    stdlib = [s for s in froms if s.split(".")[0] in sys.stdlib_module_names]
    imports = "\n".join("import " + spec for spec in plain) + "\n"
    if stdlib:
        imports += "\n" + "".join("from %s import %s\n" % (s, ", ".join(sorted(froms[s]))) for s in sorted(stdlib))
    # the one dependency: when it is missing, say how to get it rather than show a traceback
    imports += "\ntry:\n" + "".join("    from %s import %s\n" % (s, ", ".join(sorted(froms[s])))
                                    for s in sorted(set(froms) - set(stdlib)))
    # Run as a script, it goes on without it: git's credential helper and `connect` need only the standard
    # library, and the command line tells the other commands what is missing (cli.needs_dulwich).
    imports += ("except ImportError:\n"
                "    if __name__ != \"__main__\":\n"
                "        raise ImportError(DEPENDENCY_MISSING)\n")
    sections = []
    for i, module in enumerate(modules, 1):
        used = ", ".join(uses[module.name]) or "nothing of the package"
        number = "%d. " % i if module.name != "__main__" else ""
        sections.append("%s\n# %ssrc/agentgit/%s.py — %s\n# uses: %s\n%s\n\n%s" % (
            BANNER, number, module.name, module.title, used, BANNER, module.body))
    sections.insert(-1, '%s\n# Appendix: schema.sql — %s\n%s\n\nSCHEMA = """%s"""\n' % (
        BANNER, APPENDIX_TITLE, BANNER, schema))
    body = "\n\n".join(sections)
    top = "DEPENDENCY_MISSING = %r\n\n" % dependency_missing + imports
    sources = [os.path.join(root, "src", "agentgit", name + ".py") for name in ["__init__"] + order + ["__main__"]]
    digest = sources_digest(root, sources + [os.path.join(root, "schema.sql")])

    def header(places):
        return (
            "#!/usr/bin/env python3\n"
            "# Generated by `make dist` (tools/amalgamate.py) from the modules in src/agentgit/: edit those, then\n"
            "# run `make dist` and commit both. CI fails when this file is not what the modules make.\n"
            '"""%s\n%s"""\n\n' % (package_doc.rstrip() + "\n", reader_guide(modules, reading_path, places, digest)))
    # Line numbers are written at a fixed width, so the guide has as many lines whatever they are: it is
    # written once with zeros to learn where the body starts, then with the numbers.
    first_line = (header(None) + top).count("\n") + 3
    places = locate(modules, reading_path, body, first_line)
    return header(places) + top + "\n\n" + body


SCHEMA_POINTER = "# SCHEMA, schema.sql's text, is this file's appendix, near its end (make dist puts it there)"
APPENDIX_TITLE = "the SQLite schema, the only source of its text; storage runs it when a database opens"


def sources_digest(root, paths):
    """SHA-256 over the sources, each as its path, its length and its bytes: what the file was made from."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        digest.update(b"%s\n%d\n" % (os.path.relpath(path, root).encode(), len(data)) + data)
    return digest.hexdigest()


def locate(modules, reading_path, body, first_line):
    """{module name: (first line, last line)}, {"appendix": ...}, and {place: line} for each place the
    reading path names (module.name or module.Class.method); BuildError for a place not found."""
    def line_at(index):
        return first_line + body.count("\n", 0, index)
    starts = [(body.index("# %d. src/agentgit/%s.py " % (i, m.name)) if m.name != "__main__" else
               body.index("# src/agentgit/__main__.py ")) for i, m in enumerate(modules, 1)]
    starts.insert(-1, body.index("# Appendix: schema.sql "))
    ends = starts[1:] + [len(body)]
    names = [m.name for m in modules[:-1]] + ["appendix", "__main__"]
    places = {name: (line_at(start) - 1, line_at(end) - 2) for name, start, end in zip(names, starts, ends)}
    for _, anchors in reading_path:
        for anchor in anchors:
            module, *path = anchor.split(".")
            if module not in names[:-2]:
                raise BuildError("READING_PATH names %s, and there is no module %s" % (anchor, module))
            at, end = starts[names.index(module)], ends[names.index(module)]
            for depth, name in enumerate(path):
                found = re.compile(r"^%s(?:def %s\(|class %s\b|%s = )" % ("    " * depth, name, name, name),
                                   re.M).search(body, at, end)
                if found is None:
                    raise BuildError("READING_PATH names %s, which src/agentgit/%s.py does not define" % (anchor, module))
                at = found.start()
            places[anchor] = line_at(at)
    return places


def reader_guide(modules, reading_path, places, digest):
    """The reading path (the model in six stops, each with where it is), the sections with their lines,
    and the digest of the sources. With ``places`` None, zeros: the same text, line for line."""
    def line(key):
        return places[key] if places else 0

    def lines(key):
        return places[key] if places else (0, 0)
    width = max(len(m.name) for m in modules)
    stops = []
    for number, (sentence, anchors) in enumerate(reading_path, 1):
        stops.append(textwrap.fill(sentence, 104, initial_indent="  %d. " % number, subsequent_indent="     "))
        stops += ["       line %5d  %s" % (line(anchor), anchor) for anchor in anchors]
    sections = ["    %2d. %-*s  lines %5d-%5d  %s" % (i, width, m.name, *lines(m.name), m.title)
                for i, m in enumerate(modules[:-1], 1)]
    sections.append("        %-*s  lines %5d-%5d  schema.sql: %s" % (width, "appendix", *lines("appendix"), APPENDIX_TITLE))
    return ("\nReading path: the model in six stops, and where each is in this file.\n\n%s\n\n"
            "Sections: the modules of src/agentgit/ in build order (each uses only those above it).\n\n%s\n\n"
            "Made from sources whose SHA-256 is %s\n(src/agentgit/__init__.py, the modules in build order, "
            "__main__.py and schema.sql, each as its path,\nits length and its bytes; "
            "`python tools/amalgamate.py --check` compares the whole file).\n"
            % ("\n".join(stops), "\n".join(sections), digest))


def main(argv):
    try:
        text = build()
    except BuildError as error:
        print("amalgamate: %s" % error, file=sys.stderr)
        return 2
    output = os.path.join(ROOT, "agentgit.py")
    if "--check" in argv:
        with open(output, encoding="utf-8") as f:
            if f.read() != text:
                print("amalgamate: agentgit.py is stale: run `make dist` and commit it", file=sys.stderr)
                return 1
        return 0
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(output, 0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
