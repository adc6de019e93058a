"""Results processing (SPEC section 6): one row per run, tables over cells and pairs, the
statistics behind their intervals, figures and the report.
"""
