"""The precomputed adversarial augmentation pool (Section 4): `build` computes it against the
attacked FPR, `store` holds its on-disk format (shards, manifest) and the reader."""
