"""The run directory (SPEC section 2): its files and how to read them, the records a run
writes, its traffic window, accounting, params and identity, and one run's metrics. The server,
the simulator, the runner, client-side runs and the summaries all use these definitions.
"""
