"""The engine: records, configuration, run context, the graph and its run state (pure), the
plugin snapshot, the async runner, and the @task / @flow / fan_out builders (private)."""
