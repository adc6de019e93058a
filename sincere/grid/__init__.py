"""The grid of real runs: its points and run ids, the runner that starts server and generator
for each, grids against an external server, and the Ray cluster.
"""
