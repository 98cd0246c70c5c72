"""CT data: volumes and readers (MetaImage, NIfTI, DICOM), LUNA16 CSVs and folders, resampling,
windowing and lung masks, patches, prepared scans, background sampling, the phantom, and
the TFDS builders (``nodulejax.data.tfds_builders``)."""
