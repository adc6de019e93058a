"""The machine a run measures: its environment and CC mode, the CPU/GPU monitor, child
processes and CPU cores. Imports no other stage.
"""
