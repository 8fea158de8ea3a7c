"""Training: the loop over stages and steps, the teacher's outputs (live, memoised, cached on disk), checkpoints, processes."""
