"""The experiment server: admission, the model registry, the scheduler thread, settling and
the run record behind one ``ExperimentServer``; the Flask app with SINCERE's and the OpenAI
endpoints; the request checks and the HTTP server both Flask apps use; and its wiring.
"""
