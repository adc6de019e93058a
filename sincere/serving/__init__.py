"""The experiment server: admission, the model registry, the scheduler thread, settling and
the run record, the Flask app with SINCERE's and the OpenAI endpoints, and its wiring.
"""
