"""``python -m auto_workflow`` runs the command line."""

import sys

from auto_workflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
