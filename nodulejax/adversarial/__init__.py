"""The adversarial machinery of Sections 3.2-3.3: the PGD engine, fusion, the attacks, the
noises, synthetic nodules with the diameter filter, and the precomputed pool."""
