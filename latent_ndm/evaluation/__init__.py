"""Evaluating a trained run: likelihood bounds (`bounds`), seeded generation (`generation`), FID (`fid`), processes
(`parallel`), the `evaluate` runner and its results file (`runner`, `results`)."""
