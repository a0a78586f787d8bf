"""The optimizers and learning-rate schedules a transfer run may use (lib.study.config
validates a run's choice against them; lib.adapt.train builds them)."""

# "multistep": the paper's MultiStepLR (x0.1 at 50% and 72% of the epochs); "cosine": decay to
# 0 over the epochs (does not collapse at small epoch counts); "cosine_step": per batch.
SCHEDULES = ("multistep", "cosine", "cosine_step")
OPTIMIZERS = ("adam", "sgd")  # sgd: momentum 0.9 (ilm_clip.py)
