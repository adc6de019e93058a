"""What a run serves and sends: the model architectures, Hub downloads, built (random-weight,
tiny) models and their local tokenizers, and the prompt workloads.
"""
