"""The inference engine: loading, swapping and unloading models (host cache, device arena,
load paths, model folders), generating for a batch (eager or static compiled), and the engine's
own process. Knows nothing of profiles, strategies or runs.
"""
