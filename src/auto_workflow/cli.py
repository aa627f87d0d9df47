"""The ``auto-workflow`` command line: ``auto-workflow``, ``python -m auto_workflow`` and
``python -m auto_workflow.cli`` are the same program. See docs/cli.md.

The implementation lives in :mod:`auto_workflow._cli`; this is its public face.
"""

from __future__ import annotations

import sys

from auto_workflow._cli._main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, main

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "main"]

if __name__ == "__main__":
    sys.exit(main())
