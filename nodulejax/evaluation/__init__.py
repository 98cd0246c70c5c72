"""LUNA16 FROC / CPM with bootstrap CIs, Table 3, the stress tests (Tables 4-6) and the
figures (Figs. 5, 6, 8, 9)."""
