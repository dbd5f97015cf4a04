"""Plain training functions: input pipeline, model, recorder, gap probes, runner.

``runner.run_training`` is what the Celery task calls and what tests call
directly; the other modules are its parts (the train/validation split is
``backend.datasets.split``: the diagnosis needs it too). Only ``pipeline`` touches
TensorFlow itself; the rest is written against Keras 3.
"""
