"""Test support code shared by the test packages: the Gaussian oracle and its setting, tiny data and runs, the FID
stand-in extractor. Not part of the toolkit's API."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository root (where `python -m latent_ndm...` runs)
