"""Streaming webdataset shards (images or pre-encoded latents) to 1 or N processes: the Lightning data module
(`module`), its iterable streams (`streams`), and the data modules the `data` config group builds (`datasets`)."""
