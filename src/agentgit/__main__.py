"""Entry point: ``python -m agentgit`` runs the command line, as ``python agentgit.py`` does."""

import sys

from agentgit.cli import main

if __name__ == "__main__":
    sys.exit(main())
