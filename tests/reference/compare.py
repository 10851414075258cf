#!/usr/bin/env python3
"""Reference check for transcoded DICOM files.

Usage: compare.py SOURCE OUTPUT [SOURCE OUTPUT ...]

For each pair, decodes SOURCE with pydicom and its pixel plugins
(pylibjpeg with libjpeg, openjpeg and rle; pyjpegls) and reads OUTPUT,
which must be uncompressed; prints one JSON object per pair:

  source, output, stored_ts, output_ts,
  max_diff, mean_diff        pixel difference (None when not compared)
  reference                  "pydicom", or "dcmtk" where pydicom's plugins cannot
                             decode SOURCE and dcmtk's dcmdjpeg/dcmdjpls/dcmdrle can
  reference_error            why no reference could decode SOURCE
  output_error               why OUTPUT could not be read
  changed                    elements that differ other than those
                             decompression must change (must be empty)
  sop_instance_uid_kept      True when SOP Instance UIDs agree (data set and meta)
"""
import json
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pydicom
from pydicom.tag import Tag

# What decompression may change: the pixel data and what describes its
# encoding (Photometric Interpretation YBR -> RGB, Planar Configuration
# -> 0), the group lengths and the encapsulated total length.
ALLOWED = {
    Tag(0x7FE0, 0x0010),
    Tag(0x0028, 0x0004),
    Tag(0x0028, 0x0006),
    Tag(0x0028, 0x0000),
    Tag(0x7FE0, 0x0000),
    Tag(0x7FE0, 0x0003),
}


def changed_elements(a, b, prefix=""):
    """Tags whose values differ between data sets a and b (recursing into sequences)."""
    out = []
    tags = sorted(set(a.keys()) | set(b.keys()))
    for t in tags:
        if not prefix and t in ALLOWED:
            continue
        name = prefix + str(t)
        if t not in a or t not in b:
            out.append(name + (" added" if t not in a else " removed"))
            continue
        # Byte-identical values are equal whatever VR each side reads them
        # with (implicit VR output has no VR for private elements).
        ra, rb = a.get_item(t), b.get_item(t)
        raw_a, raw_b = getattr(ra, "value", None), getattr(rb, "value", None)
        if isinstance(raw_a, bytes) and raw_a == raw_b and getattr(ra, "is_raw", True):
            continue
        ea, eb = a[t], b[t]
        if ea.VR == "SQ" or eb.VR == "SQ":
            va, vb = list(ea.value or []), list(eb.value or [])
            if len(va) != len(vb):
                out.append(name + " item count")
                continue
            for i, (ia, ib) in enumerate(zip(va, vb)):
                out.extend(changed_elements(ia, ib, f"{name}[{i}]."))
            continue
        if ea.value != eb.value:
            out.append(name)
    return out


DCMTK = {
    "1.2.840.10008.1.2.4.50": "dcmdjpeg",
    "1.2.840.10008.1.2.4.51": "dcmdjpeg",
    "1.2.840.10008.1.2.4.57": "dcmdjpeg",
    "1.2.840.10008.1.2.4.70": "dcmdjpeg",
    "1.2.840.10008.1.2.4.80": "dcmdjpls",
    "1.2.840.10008.1.2.4.81": "dcmdjpls",
    "1.2.840.10008.1.2.5": "dcmdrle",
}


def dcmtk_pixels(src, ts):
    """The pixels dcmtk decodes from src, as RGB for colour."""
    tool = DCMTK.get(ts)
    if not tool:
        raise RuntimeError("no dcmtk decoder for " + ts)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out.dcm")
        # +cn keeps colour as coded by the JPEG; default converts YBR to RGB,
        # which is what the output carries.
        subprocess.run([tool, src, out], check=True, capture_output=True)
        return pydicom.dcmread(out).pixel_array


def compare(src, dst):
    r = {"source": src, "output": dst}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            a = pydicom.dcmread(src)
        except Exception as e:  # the source itself is unreadable
            r["reference_error"] = f"pydicom cannot read the source: {e}"
            return r
        r["stored_ts"] = str(a.file_meta.get("TransferSyntaxUID", ""))
        try:
            b = pydicom.dcmread(dst)
        except Exception as e:
            r["output_error"] = str(e)
            return r
        r["output_ts"] = str(b.file_meta.TransferSyntaxUID)
        r["sop_instance_uid_kept"] = (
            a.get("SOPInstanceUID") == b.get("SOPInstanceUID")
            and b.file_meta.get("MediaStorageSOPInstanceUID") == a.file_meta.get("MediaStorageSOPInstanceUID")
        )
        r["changed"] = changed_elements(a, b)
        if "PixelData" not in a:
            return r
        try:
            ref = a.pixel_array
            r["reference"] = "pydicom"
        except Exception as e:
            try:
                ref = dcmtk_pixels(src, r["stored_ts"])
                r["reference"] = "dcmtk"
            except Exception as e2:
                r["reference_error"] = str(e).splitlines()[-1][:200] + f"; dcmtk: {e2}"[:200]
                return r
        try:
            got = b.pixel_array
        except Exception as e:
            r["output_error"] = str(e).splitlines()[-1][:200]
            return r
        if ref.shape != got.shape:
            r["output_error"] = f"shape {got.shape}, reference {ref.shape}"
            return r
        d = np.abs(ref.astype(np.int64) - got.astype(np.int64))
        r["max_diff"] = int(d.max()) if d.size else 0
        r["mean_diff"] = float(d.mean()) if d.size else 0.0
    return r


def main(argv):
    if len(argv) < 2 or len(argv) % 2:
        sys.exit(__doc__)
    for src, dst in zip(argv[0::2], argv[1::2]):
        print(json.dumps(compare(src, dst)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
