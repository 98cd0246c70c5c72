"""CT data: volumes and readers (MetaImage, NIfTI, DICOM), LUNA16 CSVs and folders, resampling,
windowing and lung masks, patches, prepared scans and patch sets on disk (read by index),
background sampling, and the phantom."""
