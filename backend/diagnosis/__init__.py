"""Why the curves look the way they do: findings over a run's stored epochs.

``run_facts`` reads what the rules need of a run, from a worker's TrainConfig
or from an external run's FitSummary alike; ``gap`` splits each epoch's
``val_loss − loss`` into what the gap probes measured; ``*_rules`` hold one
plain function per finding; ``rules`` runs them all; ``keras_code`` writes
each suggestion as the change to make in a Keras script; ``report`` reads a
run from SQL and diagnoses it. No Keras here: the diagnosis reads numbers, it
never loads a model.
"""
