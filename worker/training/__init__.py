"""Plain training functions: split, input pipeline, model, recorder, runner.

``runner.run_training`` is what the Celery task calls and what tests call
directly; the other modules are its parts. Only ``pipeline`` touches
TensorFlow itself; the rest is written against Keras 3.
"""
