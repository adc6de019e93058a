"""Scheduling (SPEC section 4): the view a strategy decides on and its decisions, the
strategies, the per-model queues, and the SLA-attainment bound. Pure: no clock, no I/O.
"""
