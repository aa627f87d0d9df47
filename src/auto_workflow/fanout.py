"""``fan_out``: map a task over a list, known now or produced by another task at run time.

The same function as ``auto_workflow.fan_out``; this module is the path the public
``auto-workflow`` package documents (``from auto_workflow.fanout import fan_out``).
"""

from auto_workflow._core._build import fan_out

__all__ = ["fan_out"]
