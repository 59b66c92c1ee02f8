"""Training runs: the run configuration (`training.config`) and the run registry (`training.registry`).

Nothing is imported here, so `import training.registry` stays light (no torch) for commands
that only list runs.
"""
