#!/usr/bin/env python3
"""Compressed DICOM test objects made with dcmtk from synthetic images.

Usage: make_fixtures.py OUTDIR [EXTRA.dcm ...]

Writes an uncompressed CT-like image (16 bits allocated, 12 stored) and an
RGB image with pydicom, then compresses them with dcmtk into every syntax
dcmtk encodes: JPEG baseline, extended 12-bit, lossless (process 14 and
SV1), JPEG-LS lossless and near-lossless, RLE. Each object gets its own SOP
Instance UID; all share one study. EXTRA files are copied into OUTDIR
with their Study Instance UID set to that study (nothing else changes).
Prints the files written, one per line.
"""
import os
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

STUDY = "1.2.826.0.1.3680043.10.1137.5.1"
SERIES = STUDY + ".1"


def base(rows, cols, sop_class, n):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = f"{SERIES}.{n}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.PatientName = "Müller^Jürgen"
    ds.PatientID = "TRANSCODE"
    ds.Modality = "OT"
    ds.InstanceNumber = n
    ds.Rows, ds.Columns = rows, cols
    return ds


def ct(n):
    rows, cols = 96, 128
    ds = base(rows, cols, "1.2.840.10008.5.1.4.1.1.2", n)
    y, x = np.mgrid[0:rows, 0:cols]
    rng = np.random.default_rng(n)
    img = 1000 + 900 * np.exp(-(((x - 60) / 30.0) ** 2 + ((y - 50) / 22.0) ** 2))
    img += 400 * ((x - 90) ** 2 + (y - 30) ** 2 < 150)
    img += rng.normal(0, 25, img.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    ds.PixelData = np.clip(img, 0, 4095).astype("<u2").tobytes()
    return ds


def rgb(n):
    rows, cols = 64, 96
    ds = base(rows, cols, "1.2.840.10008.5.1.4.1.1.7", n)
    y, x = np.mgrid[0:rows, 0:cols]
    img = np.stack([x * 255 // cols, y * 255 // rows, (x + y) % 256], axis=-1)
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PixelData = img.astype("u1").tobytes()
    return ds


# name: (source image, dcmtk command)
RECIPES = {
    "ct_jpeg_extended12.dcm": ("ct", ["dcmcjpeg", "+ee"]),
    "ct_jpeg_lossless14.dcm": ("ct", ["dcmcjpeg", "+el"]),
    "ct_jpeg_lossless_sv1.dcm": ("ct", ["dcmcjpeg", "+e1"]),
    "ct_jpegls_lossless.dcm": ("ct", ["dcmcjpls", "+el"]),
    "ct_jpegls_near.dcm": ("ct", ["dcmcjpls", "+en"]),
    "ct_rle.dcm": ("ct", ["dcmcrle"]),
    "rgb_jpeg_baseline.dcm": ("rgb", ["dcmcjpeg", "+eb"]),
    "rgb_jpeg_lossless_sv1.dcm": ("rgb", ["dcmcjpeg", "+e1"]),
    "rgb_rle.dcm": ("rgb", ["dcmcrle"]),
}


def main(out, extra):
    os.makedirs(out, exist_ok=True)
    src = os.path.join(out, "src")
    os.makedirs(src, exist_ok=True)
    for n, (name, (kind, cmd)) in enumerate(sorted(RECIPES.items()), start=1):
        ds = ct(n) if kind == "ct" else rgb(n)
        plain = os.path.join(src, name)
        ds.save_as(plain, enforce_file_format=True)
        dst = os.path.join(out, name)
        subprocess.run(cmd + [plain, dst], check=True, capture_output=True)
        print(dst)
    for path in extra:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = STUDY
        dst = os.path.join(out, os.path.basename(path))
        ds.save_as(dst)
        print(dst)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
