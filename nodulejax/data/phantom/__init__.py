"""Synthetic low-dose chest-CT phantom in the LUNA16 layout (``python -m nodulejax.data.phantom``).

`anatomy` draws the lungs, vessels and airways, `body` the body wall, ribs and spine, `nodules`
the four nodule types and the distractors, `shapes` the real nodule shapes (LIDC-IDRI consensus
outlines, ``shapes="lidc"``); `generate` assembles scans and writes the LUNA16 folder
(``subset*/<uid>.mhd``, ``annotations.csv``, ``candidates.csv``, ...).
"""
