"""Whole-scan detection: CG windows, candidates, FPR scoring and LUNA16 submissions
(``python -m nodulejax.detection``)."""
