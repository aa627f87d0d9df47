"""Run flows on a Dask cluster: ``flow.run(executor=DaskExecutor(...))``.

Needs the ``dask`` extra (``pip install 'auto-workflow[dask]'``); importing this module does
not import ``distributed``, a run does. See ``docs/dask.md``.
"""

from auto_workflow._execution._dask import DaskExecutor

__all__ = ["DaskExecutor"]
