"""Ray Tune sweeps over stage 2 (and, two-level, over stage 1's masking): search spaces,
the trial driver that runs one tracked stage-2 run on Ray Train, and the Tuner around it."""
