"""The ``auto-workflow`` command line (``run``, ``describe``, ``list``) — see issue 4.

Only ``describe`` and ``run`` of ``module:flow`` targets exist so far.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auto_workflow import Flow

__all__ = ["main"]


def _load_target(target: str) -> Flow:
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(
            f"error: target must look like package.module:flow or file.py:flow; got {target!r}"
        )
    if module_name.endswith(".py"):
        path = Path(module_name)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None or not path.exists():
            raise SystemExit(f"error: no such file {module_name!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    obj: Any = getattr(module, attr, None)
    if not isinstance(obj, Flow):
        raise SystemExit(f"error: {target!r} is not a @flow")
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="auto-workflow")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a flow")
    run.add_argument("target")
    run.add_argument("--params", default=None)
    desc = sub.add_parser("describe", help="print a flow's graph as JSON")
    desc.add_argument("target")
    args = parser.parse_args(argv)
    flow_obj = _load_target(args.target)
    if args.command == "describe":
        print(json.dumps(flow_obj.describe(), indent=2))
        return 0
    params = json.loads(args.params) if args.params else None
    result = flow_obj.run(params=params)
    print(json.dumps(result, default=repr))
    return 0
