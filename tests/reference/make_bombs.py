#!/usr/bin/env python3
"""Hostile compressed DICOM objects for the decompression-bound tests.

Usage: make_bombs.py OUTDIR [PREFIX ...]

Makes the objects whose names start with one of the PREFIXes (all of them
without).

Each object is a valid DICOM file whose compressed pixel data is a valid
codestream, but the codestream and the DICOM attributes disagree, or the
attributes declare sizes no memory holds. The codestreams encode uniform
images, which compress to almost nothing: a few hundred KB at most that a
trusting decoder expands to hundreds of MB.

  jpeg_ls_bomb.dcm    JPEG-LS (run mode, one bit a line): 16000 x 16000 x 8 bits,
                      DICOM 16 x 16
  j2k_bomb.dcm        JPEG 2000 (OpenJPEG's encoding of a uniform image, SIZ and
                      tile size raised; all packets empty): 8000 x 8000, DICOM 64 x 64
  jp2_bomb.dcm        the same codestream in a JP2 file (pylibjpeg-openjpeg's)
  j2k_tiles_bomb.dcm  JPEG 2000 of 255 x 257 (as the DICOM says) in 65535 tiles of
                      1 x 1, whose coding parameters take about 450 MB in OpenJPEG
  jpeg_bomb.dcm       baseline JPEG (two bits a block: DC difference 0, EOB):
                      10000 x 10000, DICOM 16 x 16
  rle_late_bomb.dcm   RLE, 12 frames of 4096 x 4096 x 8 bits, frame 12's header
                      has 3 segments where the attributes give 1
  frames_2_31.dcm     RLE, one real 16 x 16 frame, Number of Frames 2147483648
  frames_overflow.dcm RLE, Rows = Columns = 65535, 3 samples of 16 bits,
                      Number of Frames 4294967295: the product overflows 64 bits
  good_*.dcm          legitimate objects of the same study (dcmtk-compressed)
  uniform_rle_NN.dcm  ten legitimate RLE objects of 512 x 512 zeros: about 4 KB
                      stored, 256 KiB decoded

All objects share one study (STUDY). Prints "name path" lines.
"""
import os
import struct
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian

STUDY = "1.2.826.0.1.3680043.10.1137.12.1"
SERIES = STUDY + ".1"

JPEG_LS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
RLE = "1.2.840.10008.1.2.5"

pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def dataset(n, ts, rows, cols, bits=8, samples=1, frames=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = f"{SERIES}.{n}"
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.PatientName = "Bomb^Decompression"
    ds.PatientID = "HARDENING"
    ds.Modality = "OT"
    ds.InstanceNumber = n
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    if samples > 1:
        ds.PlanarConfiguration = 0
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    return ds


def save(ds, frames, path):
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)


# --- JPEG-LS ---------------------------------------------------------------

# ISO 14495-1 A.7.1.2: the run-length order table.
J = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
     4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15]


def jpeg_ls_uniform(width, height):
    """A JPEG-LS codestream of a width x height image of zeros, 8 bits.

    Every sample is coded in run mode: each line is one run to its end,
    which costs a 1 bit per completed run segment and one more for the
    rest of the line (A.7.1.2); once the run index reaches J = 15 that is
    one bit a line. The bits are packed with JPEG-LS bit stuffing (a 0 bit
    after every 0xFF byte).
    """
    ones = 0
    index = 0
    for _ in range(height):
        rest = width
        while rest >= (1 << J[index]):
            ones += 1
            rest -= 1 << J[index]
            if index < 31:
                index += 1
        if rest > 0:
            ones += 1
    out = bytearray()
    byte, nbits, cap = 0, 0, 8
    for _ in range(ones):
        byte = (byte << 1) | 1
        nbits += 1
        if nbits == cap:
            out.append(byte)
            cap = 7 if byte == 0xFF else 8
            byte, nbits = 0, 0
    if nbits:
        out.append(byte << (cap - nbits))
    if out and out[-1] == 0xFF:
        out.append(0)
    sof = struct.pack(">BHHB", 8, height, width, 1) + bytes([1, 0x11, 0])
    sos = bytes([1, 1, 0, 0, 0, 0])  # Ns, C1 Tm, NEAR, ILV, Al/Ah
    return (b"\xff\xd8"
            + b"\xff\xf7" + struct.pack(">H", 2 + len(sof)) + sof
            + b"\xff\xda" + struct.pack(">H", 2 + len(sos)) + sos
            + bytes(out) + b"\xff\xd9")


# --- JPEG 2000 -------------------------------------------------------------

def j2k_tiles(width, height):
    """The uniform codestream of j2k_uniform with SIZ set to width x height
    in tiles of 1 x 1: as many tiles as JPEG 2000 allows (65535 for
    255 x 257), each with its coding parameters in the decoder."""
    data = bytearray(j2k_uniform(64, 0))
    for field, v in ((8, width), (12, height), (24, 1), (28, 1)):
        struct.pack_into(">I", data, field, v)
    return bytes(data)


def j2k_uniform(size, codec_format):
    """OpenJPEG's lossless encoding of a uniform 64 x 64 mid-grey image,
    with SIZ (and the single tile) raised to size x size.

    The level shift makes every coefficient 0, so every packet is empty
    (one byte saying so), and an empty packet stays valid for any number
    of code-blocks: the result is a valid codestream of a uniform
    size x size image.
    """
    from openjpeg.utils import encode_array

    arr = np.full((64, 64), 128, dtype=np.uint8)
    data = bytearray(encode_array(arr, bits_stored=8, use_mct=False, codec_format=codec_format))
    at = data.find(b"\xff\x4f\xff\x51")
    assert at >= 0
    for field in (8, 12, 24, 28):  # Xsiz, Ysiz, XTsiz, YTsiz
        struct.pack_into(">I", data, at + field, size)
    if codec_format == 1:
        ihdr = data.find(b"ihdr")
        struct.pack_into(">II", data, ihdr + 4, size, size)
    return bytes(data)


# --- JPEG ------------------------------------------------------------------

def jpeg_uniform(width, height):
    """A baseline JPEG of a uniform width x height image, 8 bits.

    Its Huffman tables have one code each, of one bit: DC difference
    category 0, and end of block. Every 8 x 8 block is those two bits.
    """
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    scan = bytes((2 * blocks + 7) // 8)
    dqt = bytes([0]) + bytes([1] * 64)
    dht = (bytes([0x00]) + bytes([1] + [0] * 15) + bytes([0])
           + bytes([0x10]) + bytes([1] + [0] * 15) + bytes([0x00]))
    sof = struct.pack(">BHHB", 8, height, width, 1) + bytes([1, 0x11, 0])
    sos = bytes([1, 1, 0x00, 0, 63, 0])

    def seg(marker, body):
        return bytes([0xFF, marker]) + struct.pack(">H", 2 + len(body)) + body

    return (b"\xff\xd8" + seg(0xDB, dqt) + seg(0xC0, sof) + seg(0xC4, dht)
            + seg(0xDA, sos) + scan + b"\xff\xd9")


# --- RLE -------------------------------------------------------------------

def rle_zeros(pixels, segments=1):
    """An RLE frame of `pixels` zeros (PackBits: 128 copies of 0 per pair),
    whose header declares `segments` segments (the same data for each)."""
    seg = b"\x81\x00" * (pixels // 128) + (b"" if pixels % 128 == 0 else bytes([257 - pixels % 128, 0]))
    header = bytearray(64)
    struct.pack_into("<I", header, 0, segments)
    for i in range(segments):
        struct.pack_into("<I", header, 4 + 4 * i, 64 + i * len(seg))
    return bytes(header) + seg * segments


def good(out, n, name, cmd):
    """A legitimate 32 x 32 gradient compressed by dcmtk."""
    ds = dataset(n, ExplicitVRLittleEndian, 32, 32)
    ds.PixelData = (np.arange(32 * 32) % 251).astype("u1").tobytes()
    plain = os.path.join(out, "src_" + name)
    ds.save_as(plain, enforce_file_format=True)
    dst = os.path.join(out, name)
    subprocess.run(cmd + [plain, dst], check=True, capture_output=True)
    os.remove(plain)
    return dst


def recipes():
    """File name to a function making it (it returns the path)."""
    r = {}

    def put(name, ds, frames):
        def make(out):
            path = os.path.join(out, name)
            save(ds(), frames(), path)
            return path
        r[name] = make

    put("jpeg_ls_bomb.dcm", lambda: dataset(1, JPEG_LS, 16, 16),
        lambda: [jpeg_ls_uniform(16000, 16000)])
    put("j2k_bomb.dcm", lambda: dataset(2, J2K, 64, 64), lambda: [j2k_uniform(8000, 0)])
    put("jp2_bomb.dcm", lambda: dataset(3, J2K, 64, 64), lambda: [j2k_uniform(8000, 1)])
    put("j2k_tiles_bomb.dcm", lambda: dataset(11, J2K, 257, 255), lambda: [j2k_tiles(255, 257)])
    put("jpeg_bomb.dcm", lambda: dataset(4, JPEG_BASELINE, 16, 16),
        lambda: [jpeg_uniform(10000, 10000)])
    side = 4096
    put("rle_late_bomb.dcm", lambda: dataset(5, RLE, side, side, frames=12),
        lambda: [rle_zeros(side * side)] * 11 + [rle_zeros(side * side, segments=3)])
    put("frames_2_31.dcm", lambda: dataset(6, RLE, 16, 16, frames="2147483648"),
        lambda: [rle_zeros(256)])
    put("frames_overflow.dcm",
        lambda: dataset(7, RLE, 65535, 65535, bits=16, samples=3, frames="4294967295"),
        lambda: [rle_zeros(256, segments=6)])
    for n, name, cmd in [(8, "good_jpeg_ls.dcm", ["dcmcjpls", "+el"]),
                         (9, "good_rle.dcm", ["dcmcrle"]),
                         (10, "good_jpeg.dcm", ["dcmcjpeg", "+eb"])]:
        r[name] = lambda out, n=n, name=name, cmd=cmd: good(out, n, name, cmd)
    for k in range(1, 11):
        put(f"uniform_rle_{k:02}.dcm", lambda k=k: dataset(100 + k, RLE, 512, 512),
            lambda: [rle_zeros(512 * 512)])
    return r


def main(out, wanted):
    os.makedirs(out, exist_ok=True)
    for name, make in sorted(recipes().items()):
        if not wanted or any(name.startswith(w) for w in wanted):
            print(name, make(out))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
