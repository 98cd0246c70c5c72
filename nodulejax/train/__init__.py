"""Training: the resumable loop, samplers, logging, and the CG, FPR, synthesizer and
augmentation trainers."""
