"""Why the curves look the way they do: findings over a run's stored epochs.

``gap`` splits each epoch's ``val_loss − loss`` into what the worker's gap
probes measured; ``*_rules`` hold one plain function per finding; ``rules``
runs them all; ``report`` reads a run from SQL and diagnoses it. No Keras
here: the diagnosis reads numbers, it never loads a model.
"""
