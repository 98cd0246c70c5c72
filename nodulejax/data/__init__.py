"""CT data: volumes and readers (MetaImage, NIfTI, DICOM), LUNA16 CSVs and folders, resampling,
windowing and lung masks, patches, prepared scans, background sampling, the phantom, and
the TFDS builders (``nodulejax.data.tfds_builders``, imported by name)."""

from __future__ import annotations

from nodulejax.data import (
           backgrounds,
           dicom,
           io,
           luna16,
           metaimage,
           nifti,
           patches,
           patchsets,
           phantom,
           prepare,
           preprocess,
           volume,
)
from nodulejax.data.backgrounds import (
           background_patches,
           positive_patches,
           sample_background_centers,
)
from nodulejax.data.dicom import read_dicom_series
from nodulejax.data.io import load_ct, save_ct
from nodulejax.data.luna16 import (
           UNKNOWN_DIAMETER_MM,
           Annotations,
           Candidates,
           Luna16Dataset,
           LUNA16FormatError,
           Predictions,
           UnknownScanError,
           check_seriesuid,
           hit_matrix,
           hit_radius_sq,
           read_annotations,
           read_candidates,
           read_predictions,
           read_seriesuids,
           write_submission,
)
from nodulejax.data.metaimage import read_metaimage, write_metaimage
from nodulejax.data.nifti import affine_to_itk, itk_to_affine, read_nifti, write_nifti
from nodulejax.data.patches import (
           NUM_SYMMETRIES,
           extract_patch,
           extract_patch_world,
           extract_patches,
           extract_patches_world,
           patch_start,
           random_flip_rot,
           random_flip_rot_batch,
           symmetry,
)
from nodulejax.data.patchsets import cg_crop_batch, fpr_patches, nodule_cutouts, seg_patches
from nodulejax.data.prepare import (
           PreparedScan,
           cache_dir,
           data_root,
           prepare_folds,
           prepare_scan,
           prepare_split,
           read_nodule_table,
           sphere_labels,
)
from nodulejax.data.preprocess import lung_mask, resample, resample_array, resampled_shape, window
from nodulejax.data.volume import (
           ORTHO_TOL,
           SINGULAR_TOL,
           CTReadError,
           CTVolume,
           check_budget,
           check_finite_voxels,
           check_geometry,
           integral_int16,
)

__all__ = ["volume", "CTVolume", "CTReadError", "check_geometry", "check_finite_voxels",
           "check_budget", "integral_int16", "ORTHO_TOL", "SINGULAR_TOL", "patches", "patch_start",
           "extract_patch", "extract_patches", "extract_patch_world", "extract_patches_world",
           "symmetry", "NUM_SYMMETRIES", "random_flip_rot", "random_flip_rot_batch", "backgrounds",
           "sample_background_centers", "background_patches", "positive_patches", "dicom",
           "read_dicom_series", "metaimage", "read_metaimage", "write_metaimage", "nifti",
           "affine_to_itk", "read_nifti", "itk_to_affine", "write_nifti", "io", "load_ct",
           "save_ct", "luna16", "UNKNOWN_DIAMETER_MM", "hit_radius_sq", "hit_matrix",
           "Annotations", "Candidates", "Predictions", "read_annotations", "read_candidates",
           "read_seriesuids", "read_predictions", "write_submission", "check_seriesuid",
           "Luna16Dataset", "UnknownScanError", "LUNA16FormatError", "preprocess", "resample",
           "resample_array", "resampled_shape", "window", "lung_mask", "prepare", "PreparedScan",
           "sphere_labels", "read_nodule_table", "prepare_scan", "prepare_folds", "data_root",
           "cache_dir", "prepare_split", "patchsets", "fpr_patches", "seg_patches",
           "nodule_cutouts", "cg_crop_batch", "phantom"]
