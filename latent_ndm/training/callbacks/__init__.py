"""Lightning callbacks of the training stages: image grids, the last checkpoint, the export, the non-finite guard."""
