"""Lightning callbacks of the training stages: image grids, the last checkpoint, the export, the non-finite guard,
the learning curve (`curve.json`)."""
