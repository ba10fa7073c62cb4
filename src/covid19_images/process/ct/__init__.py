"""CT: DICOM series, NIfTI volumes, slice stacks and masks read into HU volumes on one grid."""
