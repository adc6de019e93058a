"""Traffic (SPEC section 5): arrival patterns and traces, the precomputed schedule, and the
open-loop generator that sends it over SINCERE's or the OpenAI API.
"""
