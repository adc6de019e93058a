"""SINCERE: serving LLMs inside and outside a confidential VM, measured.

Shared logic for the top-level scripts: strategies, traffic, profiles, the simulator, the
inference engine and the CSV schemas. The scripts stay thin and import from here.
"""

__version__ = "0.1.0"
