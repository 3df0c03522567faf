"""A run on disk, as training and evaluation share it: the export format (written and read in one module), the
configuration (`configs/`), model objects built from a run's config, loading a trained run, and the hardware.
"""
