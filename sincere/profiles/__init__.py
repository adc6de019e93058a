"""Profiles (SPEC section 3): measuring them, their files, reading them back as a ProfileSet,
the length term, and choosing the set a server or grid plans with.
"""
