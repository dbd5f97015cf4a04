"""curvelab's backend: the domain (settings, SQL records, TrainConfig, dataset
ingest, the Redis event contract) and the HTTP API in ``backend.api``.

Nothing under ``backend`` imports TensorFlow or Keras: the API starts fast and
the worker reuses these domain modules without pulling in the HTTP layer.
"""
