"""The discrete-event simulator: the same strategies on the profiles' times, and the same
run directories as a real run.
"""
