"""The jobs that chain stages: the main job (stage 1 -> evaluation -> stage 2 -> evaluation)
and the tracked stage runs that it, ``jobs/stage2.py`` and the sweeps share."""
