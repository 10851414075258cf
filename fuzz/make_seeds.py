#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets to fuzz/seeds/<target>/.

Usage: fuzz/make_seeds.py   (needs pydicom and numpy; dcmtk's dcmcjpeg,
dcmcjpls and dcmcrle for the compressed frames)

The seeds are committed: tests/fuzz_targets.rs reads them (and mutates
them) in every test run, and cargo fuzz starts from them. Each is small
(a few KB) and valid, so that mutations reach deep into each parser.
"""
import io
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    generate_uid,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def image(ts, rows=8, cols=8, frames=1):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.PatientName = "Fuzz^Seed"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = (np.arange(rows * cols * frames) % 251).astype(np.uint8).tobytes()
    ds.is_little_endian = ts != ExplicitVRBigEndian
    ds.is_implicit_VR = ts == ImplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def compressed(tool, args, raw):
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in.dcm"), os.path.join(d, "out.dcm")
        with open(src, "wb") as f:
            f.write(raw)
        subprocess.run([tool, *args, src, dst], check=True)
        with open(dst, "rb") as f:
            return f.read()


def first_fragment(dcm):
    ds = pydicom.dcmread(io.BytesIO(dcm))
    from pydicom.encaps import generate_frames

    return next(generate_frames(ds.PixelData, number_of_frames=1))


def main():
    # dicom_header: the encodings the scanners meet.
    explicit = image(ExplicitVRLittleEndian)
    put("dicom_header", "explicit_le.dcm", explicit)
    put("dicom_header", "implicit_le.dcm", image(ImplicitVRLittleEndian))
    put("dicom_header", "explicit_be.dcm", image(ExplicitVRBigEndian))
    put("dicom_header", "deflated.dcm", image(DeflatedExplicitVRLittleEndian))
    put("dicom_header", "multiframe.dcm", image(ExplicitVRLittleEndian, 4, 4, 3))
    rle = compressed("dcmcrle", [], image(ExplicitVRLittleEndian, 16, 16))
    jpeg = compressed("dcmcjpeg", ["+eb"], image(ExplicitVRLittleEndian, 16, 16))
    jpls = compressed("dcmcjpls", [], image(ExplicitVRLittleEndian, 16, 16))
    put("dicom_header", "rle.dcm", rle)
    put("dicom_header", "jpeg.dcm", jpeg)

    # codestream: selector (0 JPEG, 1 JPEG-LS, 2 JPEG 2000, 3 RLE), Rows,
    # Columns, Samples per Pixel, Bits Allocated (u16 LE each), frame.
    geometry = struct.pack("<HHHH", 16, 16, 1, 8)
    put("codestream", "jpeg", bytes([0]) + geometry + first_fragment(jpeg))
    put("codestream", "jpeg_ls", bytes([1]) + geometry + first_fragment(jpls))
    put("codestream", "rle", bytes([3]) + geometry + first_fragment(rle))
    # A raw JPEG 2000 main header: SOC, SIZ (16 x 16, one tile, one
    # 8-bit component), COD, QCD, then the first tile-part marker.
    siz = struct.pack(">HHIIIIIIIIH", 0xFF51, 41, 16, 16, 0, 0, 16, 16, 0, 0, 1) + bytes([7, 1, 1])
    cod = struct.pack(">HHBBHBBBBBBB", 0xFF52, 12, 0, 0, 1, 0, 5, 4, 4, 0, 0, 0)[:14]
    qcd = struct.pack(">HHB", 0xFF5C, 4, 0x40) + bytes([0x48])
    sot = struct.pack(">HHHIBB", 0xFF90, 10, 0, 14, 0, 1) + b"\xff\x93"
    put("codestream", "j2k", bytes([2]) + geometry + b"\xff\x4f" + siz + cod + qcd + sot + b"\xff\xd9")

    # multipart: first byte is the chunk size of the second reading.
    parts = (
        b"preamble\r\n--B\r\nContent-Type: application/dicom\r\n\r\n"
        + explicit[:300]
        + b"\r\n--B\r\nContent-Type: application/dicom\r\nContent-Location: x\r\n  folded\r\n\r\n"
        + b"\x00" * 40
        + b"\r\n--B--\r\nepilogue"
    )
    put("multipart", "two_parts", bytes([7]) + parts)
    put("multipart", "empty_part", bytes([1]) + b"--B\r\n\r\n\r\n--B--")
    put("multipart", "truncated", bytes([3]) + b"--B\r\nA: b\r\n\r\nxx\r\n--")

    # stow_reply: first byte selects Content-Type (% 4) and status (/ 4 % 5).
    json_reply = (
        '{"00081190":{"vr":"UR","Value":["http://h/studies/1"]},'
        '"00081199":{"vr":"SQ","Value":[{"00081150":{"vr":"UI","Value":["1.2"]},'
        '"00081155":{"vr":"UI","Value":["1.2.3.1"]},"00081190":{"vr":"UR","Value":["u"]}}]},'
        '"00081198":{"vr":"SQ","Value":[{"00081150":{"vr":"UI","Value":["1.2"]},'
        '"00081155":{"vr":"UI","Value":["1.2.3.2"]},"00081197":{"vr":"US","Value":[272]}}]}}'
    )
    put("stow_reply", "json_202", bytes([0 + 4]) + json_reply.encode())
    put("stow_reply", "json_empty", bytes([0]) + b"{}")
    xml_reply = (
        '<?xml version="1.0"?><NativeDicomModel>'
        '<DicomAttribute tag="00081199" vr="SQ"><Item number="1">'
        '<DicomAttribute tag="00081155" vr="UI"><Value number="1">1.2.3.1</Value></DicomAttribute>'
        "</Item></DicomAttribute>"
        '<DicomAttribute tag="00081198" vr="SQ"><Item number="1">'
        '<DicomAttribute tag="00081155" vr="UI"><Value number="1">1.2.3.3</Value></DicomAttribute>'
        '<DicomAttribute tag="00081197" vr="US"><Value number="1">49152</Value></DicomAttribute>'
        "</Item></DicomAttribute></NativeDicomModel>"
    )
    put("stow_reply", "xml_202", bytes([1 + 4]) + xml_reply.encode())
    put("stow_reply", "xml_409", bytes([1 + 8]) + xml_reply.encode())

    # schedule: one dcmSchedule value per line.
    put("schedule", "workdays", "hour=8-18 dayOfWeek=1-5")
    put("schedule", "nights", "hour=18-24,0-6\nhour=* dayOfWeek=0,6")
    put("schedule", "zoned", "hour=22-6 dayOfWeek=Mon-Fri tz=Europe/Berlin")

    # iso_duration
    for name, text in [("hour", "PT1H"), ("mixed", "P1DT2H3M4.5S"), ("year", "P365D"), ("neg", "-PT5M")]:
        put("iso_duration", name, text)

    # amqp_task
    put("amqp_task", "study", '{"ExporterID":"StowExporter","StudyInstanceUID":"1.2.3"}')
    put(
        "amqp_task",
        "full",
        '{"ExporterID":"StowExporter","StudyInstanceUID":"1.2.3","SeriesInstanceUID":"1.2.3.4",'
        '"SOPInstanceUID":"1.2.3.4.5","batchID":"b1","scheduledTime":"2026-12-04T10:00:00Z"}',
    )
    put("amqp_task", "unknown", '{"ExporterID":"Nobody","StudyInstanceUID":"1.2.3","x":1}')

    # ldif: a small device with one exporter; the shipped ldif/ files are
    # read as seeds too.
    put(
        "ldif",
        "exporter",
        "dn: dcmExporterID=X,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org\n"
        "objectClass: dcmExporter\ndcmExporterID: X\ndcmURI: http://127.0.0.1:1/x\n"
        "dcmQueueName: Export1\ndicomAETitle: DCM4CHEE1\ndcmSchedule: hour=*\n"
        "dcmRetryDelay: PT30S\ndescription:: w6nDqA==\n\n",
    )
    # dimse_command: command sets as a Storage SCP reads them (implicit VR
    # little endian, group length first).
    def command(elements):
        body = b""
        for elem, value in elements:
            if len(value) % 2:
                value += b"\0"
            body += struct.pack("<HHI", 0, elem, len(value)) + value
        return struct.pack("<HHII", 0, 0, 4, len(body)) + body

    us = lambda v: struct.pack("<H", v)
    put("dimse_command", "echo", command([(0x0002, b"1.2.840.10008.1.1"), (0x0100, us(0x30)),
                                          (0x0110, us(1)), (0x0800, us(0x0101))]))
    put("dimse_command", "store", command([(0x0002, b"1.2.840.10008.5.1.4.1.1.2"), (0x0100, us(1)),
                                           (0x0110, us(7)), (0x0700, us(0)), (0x0800, us(0)),
                                           (0x1000, b"1.2.3.4.5"), (0x1030, b"MODALITY1"),
                                           (0x1031, us(3))]))
    put("dimse_command", "find", command([(0x0002, b"1.2.840.10008.5.1.4.1.2.2.1"), (0x0100, us(0x20)),
                                          (0x0110, us(2)), (0x0700, us(0)), (0x0800, us(0))]))

    # export_conditions: dcmProperty values of a dcmExportRule, one per line.
    put("export_conditions", "modality", "Modality=CT|MR")
    put("export_conditions", "parties", "SendingApplicationEntityTitle=MODALITY1\nReceivingHostname!=10\\..*")
    put("export_conditions", "sequence", "ReferencedStudySequence.ReferencedSOPInstanceUID=1\\.2\\.3\\.4")
    put("export_conditions", "tag", "(0008,0008)[2]=PRIMARY\n00080060!=SR")
    put("export_conditions", "item", "ReferencedStudySequence[1].ReferencedSOPInstanceUID=.*")
    print("seeds written to", ROOT)


if __name__ == "__main__":
    sys.exit(main())
