"""curvelab's training worker: a Celery app whose one task trains a Keras CNN.

This package is the only place TensorFlow or Keras is imported; the backend
sends tasks by name (``backend.queue``) and never pulls it in. TensorFlow reads
its environment once, at import, so the defaults below are set here, before
any submodule can import it: in the Celery worker and in tests that call the
training functions directly alike.
"""

import os

# Take GPU memory as needed instead of mapping nearly all of it up front.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
# Warnings and errors only: TensorFlow's info lines would bury the worker log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
