#!/usr/bin/env python3
"""How deep the package's imports go: for a few modules, the longest chain of `from agentgit.x import`
below it and how many modules it reaches, and how many modules import `issues`. The structure's figures
quoted in closing notes, reproducible:

    python tools/import_depth.py [src/agentgit]
"""

import functools
import glob
import os
import re
import sys


def imports(root):
    found = {}
    for path in glob.glob(os.path.join(root, "*.py")):
        with open(path, encoding="utf-8") as f:
            found[os.path.basename(path)[:-3]] = set(re.findall(r"^from agentgit\.(\w+) import", f.read(), re.M))
    return found


def main(argv):
    root = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                      "src", "agentgit")
    deps = imports(root)

    @functools.lru_cache(None)
    def depth(module):
        return 1 + max((depth(d) for d in deps.get(module, ())), default=0)

    @functools.lru_cache(None)
    def reached(module):
        return frozenset().union(*({d} | reached(d) for d in deps.get(module, ())))
    for module in ("server", "mcp_server", "oauth", "web", "broker"):
        if module in deps:
            print("%-11s %2d modules deep, reaches %2d" % (module, depth(module), len(reached(module))))
    print("modules importing issues: %d" % sum("issues" in d for d in deps.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
