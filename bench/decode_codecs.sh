#!/usr/bin/env bash
# Decompression throughput of stow-exporter's transcoder, per codec, against
# the reference decoders in the same run: dcmtk (dcmdjpeg, dcmdjpls, dcmdrle)
# and, for JPEG 2000, OpenJPEG's opj_decompress on the extracted codestreams.
#
# Usage: bench/decode_codecs.sh [REPS=3]
#
# What it does (see bench/README.md, "Decompression"):
# 1. Writes synthetic Explicit VR Little Endian objects with pydicom + numpy:
#    CT_COUNT CT-like objects of CT_FRAMES 512x512 MONOCHROME2 frames (16
#    bits allocated, 12 stored: body, lungs, spine, organs, smooth texture
#    and noise) and RGB_COUNT objects of RGB_FRAMES 1024x768 RGB 8-bit frames
#    (smooth shading, blobs, noise, circular field of view). Multi-frame by
#    default so that dcmtk's start-up (~15 ms per process) does not dominate;
#    CT_COUNT=24 CT_FRAMES=1 RGB_COUNT=8 RGB_FRAMES=1 gives single-frame
#    objects (CT Image, VL Photographic) instead.
# 2. Compresses them, one folder per codec: dcmcjpeg (baseline .50 from the
#    RGB set; extended 12-bit .51 and lossless SV1 .70 from the CT set),
#    dcmcjpls (lossless .80, near-lossless .81), dcmcrle (.5, CT and RGB),
#    opj_compress (JPEG 2000 lossless .90 and lossy .91 from raw CT frames,
#    wrapped into encapsulated DICOM by pydicom).
# 3. Checks every folder once, untimed: the reference decoder and
#    `stow-exporter transcode --out` must both succeed on every file, and
#    stow-exporter's pixels must equal the originals for lossless codecs
#    (for lossy ones the differences to the originals and to the reference
#    decoder's pixels are shown).
# 4. Measures, REPS times (order alternating), per folder:
#    - reference, 1 core: one decoder process per file (per frame for
#      opj_decompress), one after another (xargs -P 1), pinned to CPU 0;
#    - stow-exporter, 1 core: `transcode --jobs 1 --repeat R`, pinned to CPU 0;
#    - reference, P processes at a time (xargs -P P, P = nproc), unpinned;
#    - stow-exporter `transcode --jobs P --repeat R*P`, unpinned.
#    Every measurement is the wall time of the whole command (process
#    start-up included) over enough passes to last about TARGET_S seconds.
#    MB/s = decoded pixel bytes (rows x columns x samples x bytes per sample
#    x frames, 10^6 bytes = 1 MB; the same figure for both) / wall time.
#    Medians are reported; stow-exporter must report 0 failed each time.
#    Also measured: the reference's cost outside the codec (dcmconv copying
#    an uncompressed source file: start-up, dictionary, file I/O;
#    opj_decompress on a 32x32 codestream), shown as a share of its 1-core
#    time, and the CPU time other processes used during each run (a pair
#    of runs disturbed by more than LOAD_MAX cores is measured again).
#
# The Markdown table goes to stdout, progress to stderr. Everything is local;
# nothing runs in the background after the script ends; the work dir
# (mktemp -d) is removed on exit.
# Environment: BENCH_TMPDIR (parent of the work dir, default /tmp),
# BENCH_KEEP=1 (keep the work dir), CARGO_TARGET_DIR (as cargo),
# BENCH_BIN (a stow-exporter binary to measure instead of building one),
# CT_COUNT (default 3), CT_FRAMES (16), RGB_COUNT (4), RGB_FRAMES (4),
# ONLY (comma-separated codec names, e.g. ONLY=jpeg-lossless-sv1,rle-ct:
# only those folders are made and measured; default all), TARGET_S
# (seconds per timed run, default 1.0), LOAD_MAX (cores other
# processes may use during a measurement before it is repeated, default
# 0.25) and RETRIES (repeated measurements per run at most, default 15).
set -Eeuo pipefail

REPS=${1:-3}
CT_COUNT=${CT_COUNT:-3}
CT_FRAMES=${CT_FRAMES:-16}
RGB_COUNT=${RGB_COUNT:-4}
RGB_FRAMES=${RGB_FRAMES:-4}
TARGET_S=${TARGET_S:-1.0}
LOAD_MAX=${LOAD_MAX:-0.25}
RETRIES=${RETRIES:-15}
USAGE="usage: $0 [REPS=3]"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    echo "error: $*" >&2
    exit 1
}
say() { echo "== [${SECONDS}s] $*" >&2; }

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer (got '$REPS'); $USAGE"
for v in CT_COUNT CT_FRAMES RGB_COUNT RGB_FRAMES; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $TARGET_S =~ ^[0-9]*\.?[0-9]+$ ]] || die "TARGET_S must be a number of seconds (got '$TARGET_S')"
[[ $LOAD_MAX =~ ^[0-9]*\.?[0-9]+$ ]] || die "LOAD_MAX must be a number of cores (got '$LOAD_MAX')"
[[ $RETRIES =~ ^[0-9]+$ ]] || die "RETRIES must be a non-negative integer (got '$RETRIES')"

for tool in cargo python3 awk date nproc taskset xargs; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
for tool in dcmcjpeg dcmdjpeg dcmcjpls dcmdjpls dcmcrle dcmdrle dcmconv; do
    command -v "$tool" >/dev/null || die "$tool is required (Debian/Ubuntu: apt-get install dcmtk)"
done
for tool in opj_compress opj_decompress; do
    command -v "$tool" >/dev/null || die "$tool is required (Debian/Ubuntu: apt-get install libopenjp2-tools)"
done
python3 -c 'import pydicom, numpy' 2>/dev/null ||
    die "python3 with pydicom and numpy is required (pip install pydicom numpy)"

P=$(nproc)

# ---------------------------------------------------------------- cleanup
# The timed commands run in the background and are waited for, so that INT
# and TERM are handled at once; cleanup stops the one running (and its
# children: xargs' current decoder processes) by PID.
CURRENT=""
WORK=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM ERR
    if [[ -n $CURRENT ]] && kill -0 "$CURRENT" 2>/dev/null; then
        pkill -TERM -P "$CURRENT" 2>/dev/null || true
        kill -TERM "$CURRENT" 2>/dev/null || true
        wait "$CURRENT" 2>/dev/null || true
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${BENCH_KEEP:-0} == 1 ]]; then
            echo "kept the work dir $WORK (BENCH_KEEP=1)" >&2
        else
            rm -rf -- "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

# run CMD...: runs CMD in the background and waits for it; returns its status.
run() {
    local rc=0
    "$@" &
    CURRENT=$!
    wait "$CURRENT" || rc=$?
    CURRENT=""
    return "$rc"
}

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a - b}'; }
mbs() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.1f", b / 1e6 / s}'; }
# Other processes' load during a measurement: CPU time the whole machine was
# busy (user, nice, system, irq, softirq; /proc/stat) less the CPU time of
# this script's children (bash's `times`, written to a file: no subshell),
# per second of wall time, in cores.
CLK_TCK=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8; exit}' /proc/stat; }
# Sets CHILDREN_S (the builtin must run in this shell, not in a $(...)).
children_s() {
    times >"$WORK/times"
    CHILDREN_S=$(awk 'NR == 2 {split($0, f, /[ ms]+/); printf "%.3f", f[1] * 60 + f[2] + f[3] * 60 + f[4]}' "$WORK/times")
}
load_mark() {
    LOAD_B0=$(busy_ticks)
    children_s
    LOAD_C0=$CHILDREN_S
}
# Sets LOAD (cores) for a measurement of $1 s since load_mark.
load_since() {
    local b1
    children_s
    b1=$(busy_ticks)
    # (clock ticks are 1/CLK_TCK s: the figure is rough for short runs)
    LOAD=$(awk -v b0="$LOAD_B0" -v b1="$b1" -v c0="$LOAD_C0" -v c1="$CHILDREN_S" -v hz="$CLK_TCK" -v w="$1" -v p="$P" \
        'BEGIN {o = ((b1 - b0) / hz - (c1 - c0)) / w; if (o < 0) o = 0; if (o > p) o = p; printf "%.2f", o}')
}

# Passes needed for a run of about TARGET_S seconds when one takes $1 s.
passes_for() { awk -v t="$1" -v g="$TARGET_S" 'BEGIN {n = int(g / (t > 0.001 ? t : 0.001) + 0.999); printf "%d", n < 1 ? 1 : n}'; }

# ------------------------------------------------------------------ build
if [[ -n ${BENCH_BIN:-} ]]; then
    # A binary built elsewhere (e.g. a copy of an earlier build, to compare)
    BIN=$(realpath "$BENCH_BIN") || die "BENCH_BIN=$BENCH_BIN not found"
    [[ -x $BIN ]] || die "BENCH_BIN=$BENCH_BIN is not executable"
    say "using $BIN (BENCH_BIN; not building)"
else
    say "building the release binary (cargo skips this when up to date)"
    (cd "$ROOT" && cargo build --release --bin stow-exporter) || die "cargo build --release failed"
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    [[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
    BIN=$TARGET/release/stow-exporter
    [[ -x $BIN ]] || die "$BIN not found after the build"
fi
"$BIN" transcode --help >/dev/null 2>&1 || die "$BIN has no 'transcode' command"
export RUST_LOG=warn
export NO_COLOR=1

WORK=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/stow-decode.XXXXXX") ||
    die "cannot create a work dir under ${BENCH_TMPDIR:-/tmp}"
LOGS=$WORK/logs
mkdir -p "$LOGS"
need_kb=$(awk -v c=$((CT_COUNT * CT_FRAMES)) -v r=$((RGB_COUNT * RGB_FRAMES)) 'BEGIN {printf "%d", (c * 524288 * 16 + r * 2359296 * 8) / 1024}')
avail_kb=$(df -Pk "$WORK" | awk 'NR == 2 {print $4}')
((avail_kb > need_kb)) ||
    die "$WORK: $((avail_kb / 1024)) MiB free, the benchmark needs about $((need_kb / 1024)) MiB (set BENCH_TMPDIR)"
say "work dir $WORK"

# ------------------------------------------------------------ test data
DATA="$CT_COUNT CT-like objects of $CT_FRAMES 512x512x12-bit frames, $RGB_COUNT RGB objects of $RGB_FRAMES 1024x768x8-bit frames"
say "writing $DATA (pydicom)"
python3 - "$WORK/src" "$CT_COUNT" "$CT_FRAMES" "$RGB_COUNT" "$RGB_FRAMES" <<'PY' || die "generating the synthetic images failed"
import os, sys
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

out = sys.argv[1]
n_ct, f_ct, n_rgb, f_rgb = map(int, sys.argv[2:6])
rng = np.random.default_rng(20261127)
study = generate_uid()

def smooth_inside(d, k):
    """1 inside (d < 1), 0 outside, with a soft edge of width ~1/k."""
    return 1.0 / (1.0 + np.exp(np.clip((d - 1.0) * k, -50, 50)))

def ellipse(x, y, cx, cy, rx, ry):
    return np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)

def base(sop_class, series, number, modality):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = modality
    ds.PatientName = "Bench^Decode"
    ds.PatientID = "BENCH-DECODE"
    ds.StudyDate = "20261127"
    ds.InstanceNumber = number
    return ds

def save(ds, path):
    ds.save_as(path, enforce_file_format=True)

# CT: HU + 1024 stored in 12 bits (0..4095), rescale intercept -1024.
def ct_slice(t):
    y, x = np.mgrid[0:512, 0:512].astype(np.float32)
    hu = np.full((512, 512), -1000.0, np.float32)  # air
    body = smooth_inside(ellipse(x, y, 256, 262, 205 + 8 * np.sin(3 * t), 150 + 5 * t), 60)
    inner = smooth_inside(ellipse(x, y, 256, 262, 192 + 8 * np.sin(3 * t), 137 + 5 * t), 60)
    hu += body * (1000 - 90) + inner * 130  # fat rim -90, soft tissue +40
    # smooth tissue texture
    tex = (12 * np.sin(x / 17.0 + 5 * t) * np.cos(y / 23.0 - 3 * t)
           + 8 * np.sin((x + y) / 41.0 + t) + 6 * np.cos((x - 2 * y) / 29.0))
    hu += inner * tex
    # organs: a few smooth blobs of different density
    for cx, cy, rx, ry, d in ((300, 300, 60, 45, 25), (200, 320, 40, 35, -15), (330, 220, 30, 25, 35)):
        hu += inner * d * smooth_inside(ellipse(x, y, cx + 10 * t, cy - 8 * t, rx, ry), 8)
    # lungs, with a few vessels
    for cx in (175, 337):
        lung = smooth_inside(ellipse(x, y, cx, 235, 62 + 10 * t, 88 - 20 * t), 25)
        vessels = sum(smooth_inside(ellipse(x, y, cx + dx, 235 + dy, 4, 4), 4)
                      for dx, dy in ((-20, -30), (15, 10), (-5, 40), (25, -50)))
        hu = hu * (1 - lung) + lung * (-850 + 800 * vessels)
    # spine: cortical ring and cancellous core; the table under the body
    ring = smooth_inside(ellipse(x, y, 256, 370, 28, 26), 30)
    core = smooth_inside(ellipse(x, y, 256, 370, 22, 20), 30)
    hu = hu * (1 - ring) + ring * 1100 - core * 800
    table = ((y > 430) & (y < 440) & (np.abs(x - 256) < 230)).astype(np.float32)
    hu = hu * (1 - table) + table * 300
    hu += rng.normal(0, 14, hu.shape) * (body + 0.3)  # quantum noise
    return np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16)

# RGB: a photo-like scene (endoscopy / visible light): smooth shading,
# coloured blobs, a vignette, fine texture and sensor noise in a circular
# field of view.
def rgb_frame(t):
    y, x = np.mgrid[0:768, 0:1024].astype(np.float32)
    img = np.empty((768, 1024, 3), np.float32)
    r = np.sqrt((x - 512) ** 2 + (y - 384) ** 2) / 640
    vignette = np.clip(1.1 - r * r, 0, 1)
    for c, (b, g) in enumerate(((170, 60), (95, 40), (80, 30))):
        img[..., c] = b + g * np.sin(x / (90 + 20 * c) + 2 * t) * np.cos(y / (70 + 15 * c) - t)
    for cx, cy, rad, col in ((300, 300, 120, (60, -30, -20)), (700, 450, 160, (-40, 30, 20)),
                             (520, 200, 80, (30, 30, -40)), (850, 650, 90, (50, 10, 10))):
        w = smooth_inside(ellipse(x, y, cx + 60 * t, cy - 40 * t, rad, rad * 0.8), 6)
        img += w[..., None] * np.array(col, np.float32)
    img += (6 * np.sin(x / 3.1) * np.sin(y / 2.7))[..., None]  # fine texture
    img *= vignette[..., None]
    img += rng.normal(0, 3, img.shape)
    # circular field of view, black outside (as endoscopy and many
    # ultrasound or microscopy images)
    img *= smooth_inside(ellipse(x, y, 512, 384, 372, 372), 60)[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)

os.makedirs(os.path.join(out, "ct"), exist_ok=True)
os.makedirs(os.path.join(out, "ct-raw"), exist_ok=True)
series = generate_uid()
total = n_ct * f_ct
for i in range(n_ct):
    frames = [ct_slice(k / max(total - 1, 1)) for k in range(i * f_ct, (i + 1) * f_ct)]
    if f_ct == 1:
        ds = base("1.2.840.10008.5.1.4.1.1.2", series, i + 1, "CT")  # CT Image
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SliceThickness = "1.0"
        ds.ImagePositionPatient = [-250, -250, -1.0 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.9765625, 0.9765625]
    else:
        # Multi-frame Grayscale Word Secondary Capture: a slab of slices
        ds = base("1.2.840.10008.5.1.4.1.1.7.3", series, i + 1, "CT")
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ConversionType = "WSD"
        ds.NumberOfFrames = f_ct
        ds.FrameIncrementPointer = 0x00181063  # Frame Time
        ds.FrameTime = "1.0"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = frames[0].shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = b"".join(f.astype("<u2").tobytes() for f in frames)
    save(ds, os.path.join(out, "ct", f"ct-{i + 1:03d}.dcm"))
    # raw little-endian samples of each frame for opj_compress
    for k, f in enumerate(frames):
        f.astype("<u2").tofile(os.path.join(out, "ct-raw", f"ct-{i + 1:03d}-{k:03d}.rawl"))

os.makedirs(os.path.join(out, "rgb"), exist_ok=True)
series = generate_uid()
total = n_rgb * f_rgb
for i in range(n_rgb):
    frames = [rgb_frame(k / max(total - 1, 1)) for k in range(i * f_rgb, (i + 1) * f_rgb)]
    if f_rgb == 1:
        ds = base("1.2.840.10008.5.1.4.1.1.77.1.4", series, i + 1, "XC")  # VL Photographic
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
    else:
        # Multi-frame True Color Secondary Capture: a short clip
        ds = base("1.2.840.10008.5.1.4.1.1.7.4", series, i + 1, "XC")
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ConversionType = "DV"
        ds.NumberOfFrames = f_rgb
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = "40.0"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = frames[0].shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = b"".join(f.tobytes() for f in frames)
    save(ds, os.path.join(out, "rgb", f"rgb-{i + 1:03d}.dcm"))
PY

# ------------------------------------------------------------ compression
# CODECS: name source-set transfer-syntax decoder lossless(1/0)
CODECS=(
    "jpeg-baseline-rgb rgb 1.2.840.10008.1.2.4.50 dcmdjpeg 0"
    "jpeg-extended-12bit ct 1.2.840.10008.1.2.4.51 dcmdjpeg 0"
    "jpeg-lossless-sv1 ct 1.2.840.10008.1.2.4.70 dcmdjpeg 1"
    "jpeg-ls-lossless ct 1.2.840.10008.1.2.4.80 dcmdjpls 1"
    "jpeg-ls-near-lossless ct 1.2.840.10008.1.2.4.81 dcmdjpls 0"
    "rle-ct ct 1.2.840.10008.1.2.5 dcmdrle 1"
    "rle-rgb rgb 1.2.840.10008.1.2.5 dcmdrle 1"
    "j2k-lossless ct 1.2.840.10008.1.2.4.90 opj_decompress 1"
    "j2k-lossy ct 1.2.840.10008.1.2.4.91 opj_decompress 0"
)
# ONLY=a,b: keep those codecs (in the order above).
if [[ -n ${ONLY:-} ]]; then
    kept=()
    for spec in "${CODECS[@]}"; do
        if [[ ,$ONLY, == *",${spec%% *},"* ]]; then kept+=("$spec"); fi
    done
    for want in ${ONLY//,/ }; do
        printf '%s\n' "${CODECS[@]}" | grep -q "^$want " || die "ONLY: no codec named '$want'"
    done
    CODECS=("${kept[@]}")
fi
# wanted NAME: whether the codec NAME is measured in this run.
wanted() { printf '%s\n' "${CODECS[@]}" | grep -q "^$1 "; }

# compress_all TOOL OPTIONS SET DEST: TOOL [OPTIONS] in out, P files at a time.
compress_all() {
    local tool=$1 opts=$2 set=$3 dest=$4 list=$WORK/compress.list f
    mkdir -p "$dest"
    : >"$list"
    for f in "$WORK/src/$set"/*.dcm; do
        printf '%s\0%s\0' "$f" "$dest/${f##*/}" >>"$list"
    done
    # shellcheck disable=SC2086 # OPTIONS are words
    run xargs -0 -n 2 -P "$P" -a "$list" "$tool" $opts 2>>"$LOGS/compress.log" ||
        { tail -n 20 "$LOGS/compress.log" >&2; die "$tool $opts failed on the $set set"; }
}

say "compressing with dcmtk (dcmcjpeg, dcmcjpls, dcmcrle) and OpenJPEG (opj_compress)"
t=$(now)
wanted jpeg-baseline-rgb && compress_all dcmcjpeg +eb rgb "$WORK/codec/jpeg-baseline-rgb"
wanted jpeg-extended-12bit && compress_all dcmcjpeg "+ee +rm" ct "$WORK/codec/jpeg-extended-12bit"
wanted jpeg-lossless-sv1 && compress_all dcmcjpeg +e1 ct "$WORK/codec/jpeg-lossless-sv1"
wanted jpeg-ls-lossless && compress_all dcmcjpls +el ct "$WORK/codec/jpeg-ls-lossless"
wanted jpeg-ls-near-lossless && compress_all dcmcjpls +en ct "$WORK/codec/jpeg-ls-near-lossless"
wanted rle-ct && compress_all dcmcrle "" ct "$WORK/codec/rle-ct"
wanted rle-rgb && compress_all dcmcrle "" rgb "$WORK/codec/rle-rgb"

# JPEG 2000: opj_compress on the raw samples (lossless: reversible 5/3, the
# default; lossy: irreversible 9/7 at 10:1), then wrapped by pydicom.
if wanted j2k-lossless || wanted j2k-lossy; then
mkdir -p "$WORK/j2k-lossless" "$WORK/j2k-lossy"
: >"$WORK/j2k.list"
for f in "$WORK/src/ct-raw"/*.rawl; do
    b=${f##*/}
    b=${b%.rawl}
    printf '%s\0' -i "$f" -o "$WORK/j2k-lossless/$b.j2k" >>"$WORK/j2k.list"
done
run xargs -0 -n 4 -P "$P" -a "$WORK/j2k.list" opj_compress -F 512,512,1,12,u >>"$LOGS/compress.log" 2>&1 ||
    { tail -n 20 "$LOGS/compress.log" >&2; die "opj_compress (lossless) failed"; }
sed -z 's#/j2k-lossless/#/j2k-lossy/#' "$WORK/j2k.list" >"$WORK/j2k-lossy.list"
run xargs -0 -n 4 -P "$P" -a "$WORK/j2k-lossy.list" opj_compress -F 512,512,1,12,u -I -r 10 >>"$LOGS/compress.log" 2>&1 ||
    { tail -n 20 "$LOGS/compress.log" >&2; die "opj_compress (lossy) failed"; }
python3 - "$WORK" <<'PY' || die "wrapping the JPEG 2000 codestreams into DICOM failed"
import os, sys
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

work = sys.argv[1]
for kind, ts, lossy in (("j2k-lossless", "1.2.840.10008.1.2.4.90", False),
                        ("j2k-lossy", "1.2.840.10008.1.2.4.91", True)):
    dest = os.path.join(work, "codec", kind)
    os.makedirs(dest, exist_ok=True)
    for name in sorted(os.listdir(os.path.join(work, "src", "ct"))):
        ds = pydicom.dcmread(os.path.join(work, "src", "ct", name))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        css = []
        for k in range(frames):
            with open(os.path.join(work, kind, f"{name[:-4]}-{k:03d}.j2k"), "rb") as f:
                css.append(f.read())
            assert css[-1][:4] == b"\xff\x4f\xff\x51", f"{kind}/{name} frame {k}: not a J2K codestream"
        raw = len(ds.PixelData)
        ds.file_meta.TransferSyntaxUID = ts
        ds.PixelData = encapsulate(css, has_bot=True)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        if lossy:
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.LossyImageCompression = "01"
            ds.LossyImageCompressionRatio = f"{raw / sum(map(len, css)):.2f}"
            ds.LossyImageCompressionMethod = "ISO_15444_1"
        ds.save_as(os.path.join(dest, name), enforce_file_format=True)
PY

# The codestreams opj_decompress reads, extracted from the DICOM files (the
# same bytes stow-exporter decodes).
python3 - "$WORK" <<'PY' || die "extracting the JPEG 2000 codestreams failed"
import os, sys
import pydicom
from pydicom.encaps import generate_frames

work = sys.argv[1]
for kind in ("j2k-lossless", "j2k-lossy"):
    src = os.path.join(work, "codec", kind)
    dest = os.path.join(work, "codestreams", kind)
    os.makedirs(dest, exist_ok=True)
    for name in sorted(os.listdir(src)):
        ds = pydicom.dcmread(os.path.join(src, name))
        frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
        for n, fr in enumerate(frames):
            with open(os.path.join(dest, f"{name[:-4]}-{n}.j2k"), "wb") as f:
                f.write(fr)
PY
fi
say "compressed in $(sub "$(now)" "$t") s"

# Per folder: files, decoded pixel bytes (from the headers), syntax check,
# compressed bytes.
python3 - "$WORK" "${CODECS[@]}" >"$WORK/folders.tsv" <<'PY' || die "reading the compressed folders failed"
import os, sys
import pydicom

work = sys.argv[1]
for spec in sys.argv[2:]:
    name, _, ts = spec.split()[:3]
    folder = os.path.join(work, "codec", name)
    files = sorted(os.listdir(folder))
    decoded = compressed = nframes = 0
    for f in files:
        path = os.path.join(folder, f)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.file_meta.TransferSyntaxUID != ts:
            sys.exit(f"{name}/{f}: transfer syntax {ds.file_meta.TransferSyntaxUID}, expected {ts}")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        decoded += ds.Rows * ds.Columns * ds.SamplesPerPixel * ((ds.BitsAllocated + 7) // 8) * frames
        nframes += frames
        compressed += os.path.getsize(path)
    print(f"{name}\t{len(files)}\t{nframes}\t{decoded}\t{compressed}")
PY
declare -A NFILES DECODED
while IFS=$'\t' read -r name n frames dec comp; do
    NFILES[$name]=$n
    DECODED[$name]=$dec
    say "$name: $n files, $frames frames, $(mbs "$dec" 1) MB decoded, compressed $(awk -v d="$dec" -v c="$comp" 'BEGIN {printf "%.2f", d / c}'):1"
done <"$WORK/folders.tsv"

# ------------------------------------------------------ reference lists
# One list per folder of NUL-separated arguments for xargs: dcmtk tools get
# "in out", opj_decompress "-i in -o out". Outputs go to the work dir.
declare -A REF_TOOL REF_N LOSSLESS
for spec in "${CODECS[@]}"; do
    read -r name _ _ tool lossless <<<"$spec"
    REF_TOOL[$name]=$tool
    LOSSLESS[$name]=$lossless
    out=$WORK/ref-out/$name
    mkdir -p "$out"
    list=$WORK/ref-$name.list
    : >"$list"
    if [[ $tool == opj_decompress ]]; then
        REF_N[$name]=4
        for f in "$WORK/codestreams/$name"/*.j2k; do
            b=${f##*/}
            printf '%s\0' -i "$f" -o "$out/${b%.j2k}.raw" >>"$list"
        done
    else
        REF_N[$name]=2
        for f in "$WORK/codec/$name"/*.dcm; do
            printf '%s\0%s\0' "$f" "$out/${f##*/}" >>"$list"
        done
    fi
done

# The reference's fixed cost per process (start-up, data dictionary,
# reading and writing the file; no codec): dcmconv copying one uncompressed
# source file of each set, opj_decompress on a 32x32 codestream. Part of
# every reference figure, shown as a share of its 1-core time.
FIXED_RUNS=20
mkdir -p "$WORK/fixed"
python3 -c 'import numpy as np, sys; np.zeros((32, 32), "<u2").tofile(sys.argv[1])' "$WORK/fixed/tiny.rawl"
opj_compress -i "$WORK/fixed/tiny.rawl" -o "$WORK/fixed/tiny.j2k" -F 32,32,1,12,u >>"$LOGS/compress.log" 2>&1 ||
    die "opj_compress failed on a 32x32 image"
first_ct=$(find "$WORK/src/ct" -name '*.dcm' | sort | head -n 1)
first_rgb=$(find "$WORK/src/rgb" -name '*.dcm' | sort | head -n 1)
for ((i = 0; i < FIXED_RUNS; i++)); do
    printf '%s\0%s\0' "$first_ct" "$WORK/fixed/ct.dcm" >>"$WORK/fixed-ct.list"
    printf '%s\0%s\0' "$first_rgb" "$WORK/fixed/rgb.dcm" >>"$WORK/fixed-rgb.list"
    printf '%s\0' -i "$WORK/fixed/tiny.j2k" -o "$WORK/fixed/tiny.raw" >>"$WORK/fixed-opj.list"
done
# fixed KEY (ct, rgb or opj): sets FIXED_MS, milliseconds per process,
# pinned to CPU 0.
fixed() {
    local key=$1 t0 t1 n=2 tool=(dcmconv)
    [[ $key == opj ]] && n=4 tool=(opj_decompress -quiet -threads 1)
    t0=$(now)
    run taskset -c 0 xargs -0 -n "$n" -P 1 -a "$WORK/fixed-$key.list" "${tool[@]}" >>"$LOGS/fixed.log" 2>&1 ||
        { tail -n 20 "$LOGS/fixed.log" >&2; die "${tool[0]} failed (fixed cost, $key)"; }
    t1=$(now)
    FIXED_MS=$(awk -v a="$t1" -v b="$t0" -v n="$FIXED_RUNS" 'BEGIN {printf "%.2f", (a - b) * 1000 / n}')
}

# ref NAME PROCS PASSES [taskset...]: the reference decoder over the folder
# PASSES times, PROCS processes at a time; sets WALL (seconds). The timed
# commands run in this shell (not in a $(...)), so that cleanup can stop them.
ref() {
    local name=$1 procs=$2 passes=$3 tool t0 t1 i
    shift 3
    local list=$WORK/ref-$name.list
    if ((passes > 1)); then
        list=$WORK/ref-$name.x$passes.list
        [[ -f $list ]] || for ((i = 0; i < passes; i++)); do cat "$WORK/ref-$name.list"; done >"$list"
    fi
    tool=${REF_TOOL[$name]}
    local args=("$tool")
    [[ $tool == opj_decompress ]] && args+=(-quiet -threads 1)
    t0=$(now)
    run "$@" xargs -0 -n "${REF_N[$name]}" -P "$procs" -a "$list" "${args[@]}" >>"$LOGS/ref-$name.log" 2>&1 ||
        { tail -n 20 "$LOGS/ref-$name.log" >&2; die "$name: $tool failed (see above)"; }
    t1=$(now)
    WALL=$(sub "$t1" "$t0")
}

# ours NAME JOBS REPEAT [taskset...]: stow-exporter transcode over the folder;
# sets WALL. Every file must be converted, with the expected
# number of decoded bytes.
ours() {
    local name=$1 jobs=$2 repeat=$3 t0 t1 summary want
    shift 3
    local log=$LOGS/ours-$name.err
    t0=$(now)
    run "$@" "$BIN" transcode --jobs "$jobs" --repeat "$repeat" "$WORK/codec/$name" >"$WORK/ours-$name.jsonl" 2>"$log" ||
        { tail -n 20 "$log" >&2; die "$name: stow-exporter transcode --jobs $jobs --repeat $repeat failed"; }
    t1=$(now)
    summary=$(grep -E '^[0-9]+ converted, [0-9]+ failed' "$log" | tail -n 1)
    want="$((NFILES[$name] * repeat)) converted, 0 failed; "
    [[ $summary == "$want"* ]] ||
        { tail -n 20 "$log" >&2; die "$name: stow-exporter reported '$summary', expected '$want...'"; }
    check_jsonl "$name"
    WALL=$(sub "$t1" "$t0")
}

# The first round's JSON lines: every file ok, decoded bytes as expected.
check_jsonl() {
    local name=$1 got
    got=$(python3 - "$WORK/ours-$name.jsonl" <<'PY'
import json, sys
n = ok = b = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    n += 1
    if r.get("ok"):
        ok += 1
        b += r["decoded_pixel_bytes"]
    else:
        print(f"{r.get('file')}: {r.get('error')}", file=sys.stderr)
print(n, ok, b)
PY
    ) || die "$name: cannot read stow-exporter's JSON lines"
    [[ $got == "${NFILES[$name]} ${NFILES[$name]} ${DECODED[$name]}" ]] ||
        die "$name: stow-exporter files/ok/decoded bytes = $got, expected ${NFILES[$name]} ${NFILES[$name]} ${DECODED[$name]}"
}

# ----------------------------------------------------- correctness check
# Once per folder, untimed: the reference decodes everything (into
# ref-out/), stow-exporter writes its results (ours-out/); then the pixels
# are compared. These runs also size the timed ones (passes, --repeat).
say "checking every folder once (reference decoder and stow-exporter --out)"
declare -A REF_PASSES OURS_REPEAT
for spec in "${CODECS[@]}"; do
    read -r name _ _ _ _ <<<"$spec"
    ref "$name" 1 1 taskset -c 0
    s=$WALL
    REF_PASSES[$name]=$(passes_for "$s")
    run taskset -c 0 "$BIN" transcode --jobs 1 --out "$WORK/ours-out/$name" "$WORK/codec/$name" \
        >"$WORK/ours-$name.jsonl" 2>"$LOGS/ours-$name.err" ||
        { tail -n 20 "$LOGS/ours-$name.err" >&2; die "$name: stow-exporter transcode failed"; }
    check_jsonl "$name"
    # --repeat for about TARGET_S s: start-up and the walk are a larger
    # share of a short run, so grow it until it lasts TARGET_S/4 first.
    r=1
    while :; do
        ours "$name" 1 "$r" taskset -c 0
        o=$WALL
        awk -v o="$o" -v g="$TARGET_S" -v r="$r" 'BEGIN {exit !(o >= g / 4 || r >= 4096)}' && break
        r=$((r * 4))
    done
    OURS_REPEAT[$name]=$(awk -v o="$o" -v g="$TARGET_S" -v r="$r" 'BEGIN {n = int(r * g / o + 0.999); printf "%d", n < 1 ? 1 : n}')
    say "$name: ${REF_TOOL[$name]} $s s per pass (x${REF_PASSES[$name]} timed), stow-exporter --repeat $r $o s (--repeat ${OURS_REPEAT[$name]} timed)"
done
python3 - "$WORK" "${CODECS[@]}" <<'PY' || die "stow-exporter's pixels differ (see above)"
import os, sys
import numpy as np
import pydicom

work = sys.argv[1]
bad = []

def pixels(path):
    ds = pydicom.dcmread(path)
    ts = ds.file_meta.TransferSyntaxUID
    if ts not in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):
        raise SystemExit(f"{path}: transfer syntax {ts} is not uncompressed")
    dt = np.uint8 if ds.BitsAllocated == 8 else np.uint16
    a = np.frombuffer(ds.PixelData, dt).astype(np.int32)
    spp = int(ds.SamplesPerPixel)
    if spp == 3 and int(ds.get("PlanarConfiguration", 0)) == 1:
        a = a.reshape(3, -1).T.reshape(-1)
    # dcmcjpeg's lossy JPEG shifts the stored values and the rescale
    # intercept: compare modality values (HU for CT)
    if spp == 1 and "RescaleIntercept" in ds:
        a = a * int(float(ds.get("RescaleSlope", 1))) + int(float(ds.RescaleIntercept))
    return a, ds.PhotometricInterpretation

def ref_pixels(name, tool, f):
    if tool == "opj_decompress":
        # raw stored values; the rescale is the source's
        ds = pydicom.dcmread(os.path.join(work, "codec", name, f), stop_before_pixels=True)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        a = np.concatenate([np.fromfile(os.path.join(work, "ref-out", name, f"{f[:-4]}-{k}.raw"), "<u2")
                            for k in range(frames)]).astype(np.int32)
        return a * int(float(ds.RescaleSlope)) + int(float(ds.RescaleIntercept))
    return pixels(os.path.join(work, "ref-out", name, f))[0]

for spec in sys.argv[2:]:
    name, src, _, tool, lossless = spec.split()
    folder = os.path.join(work, "codec", name)
    worst = total = count = 0
    worst_ref = 0
    for f in sorted(os.listdir(folder)):
        ours, pi = pixels(os.path.join(work, "ours-out", name, f))
        orig, _ = pixels(os.path.join(work, "src", src, f))
        ref = ref_pixels(name, tool, f)
        if ours.shape != orig.shape:
            bad.append(f"{name}/{f}: {ours.size} samples, expected {orig.size}")
            continue
        if pi.startswith("YBR"):
            bad.append(f"{name}/{f}: stow-exporter's output is {pi}, expected RGB")
            continue
        d = np.abs(ours - orig)
        worst = max(worst, int(d.max()))
        total += int(d.sum())
        count += d.size
        if ref.shape == ours.shape:
            worst_ref = max(worst_ref, int(np.abs(ours - ref).max()))
        else:
            bad.append(f"{name}/{f}: the reference decoded {ref.size} samples, stow-exporter {ours.size}")
    if lossless == "1" and worst:
        bad.append(f"{name}: lossless, but stow-exporter's pixels differ from the originals by up to {worst}")
    print(f"== {name}: stow-exporter vs originals max |diff| {worst}, mean {total / max(count, 1):.3f};"
          f" vs {tool} max |diff| {worst_ref}", file=sys.stderr)
for b in bad:
    print(f"error: {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY

# ------------------------------------------------------------------ runs
RESULTS=$WORK/results.tsv
: >"$RESULTS"
# measure_ref / measure_ours NAME REP set LINE, a results row: kind name rep
# MB/s(1 core) MB/s(P) other-load(1 core) other-load(P).
measure_ref() {
    local name=$1 rep=$2 n=${REF_PASSES[$1]} s1 sp l1 lp
    load_mark
    ref "$name" 1 "$n" taskset -c 0
    s1=$WALL
    load_since "$s1"
    l1=$LOAD
    load_mark
    ref "$name" "$P" "$n"
    sp=$WALL
    load_since "$sp"
    lp=$LOAD
    LINE=$(printf 'ref\t%s\t%s\t%s\t%s\t%s\t%s' "$name" "$rep" "$(mbs $((DECODED[$name] * n)) "$s1")" \
        "$(mbs $((DECODED[$name] * n)) "$sp")" "$l1" "$lp")
    say "rep $rep $name ${REF_TOOL[$name]} x$n: 1 core $s1 s ($(mbs $((DECODED[$name] * n)) "$s1") MB/s)," \
        "$P procs $sp s ($(mbs $((DECODED[$name] * n)) "$sp") MB/s); other processes $l1, $lp cores"
}
measure_ours() {
    local name=$1 rep=$2 r=${OURS_REPEAT[$1]} s1 sp l1 lp
    load_mark
    ours "$name" 1 "$r" taskset -c 0
    s1=$WALL
    load_since "$s1"
    l1=$LOAD
    load_mark
    ours "$name" "$P" $((r * P))
    sp=$WALL
    load_since "$sp"
    lp=$LOAD
    LINE=$(printf 'ours\t%s\t%s\t%s\t%s\t%s\t%s' "$name" "$rep" "$(mbs $((DECODED[$name] * r)) "$s1")" \
        "$(mbs $((DECODED[$name] * r * P)) "$sp")" "$l1" "$lp")
    say "rep $rep $name stow-exporter: --jobs 1 --repeat $r $s1 s ($(mbs $((DECODED[$name] * r)) "$s1") MB/s)," \
        "--jobs $P --repeat $((r * P)) $sp s ($(mbs $((DECODED[$name] * r * P)) "$sp") MB/s); other processes $l1, $lp cores"
}
# measure ref|ours NAME REP: when other processes used more than LOAD_MAX
# cores during it, measures again (up to twice, RETRIES in all per script
# run) and keeps the least disturbed attempt.
RETRIES_USED=0
measure() {
    local kind=$1 name=$2 rep=$3 attempt best="" best_load=0 load
    for attempt in 1 2 3; do
        "measure_$kind" "$name" "$rep"
        load=$(awk -F '\t' '{print ($6 > $7 ? $6 : $7)}' <<<"$LINE")
        if [[ -z $best ]] || awk -v a="$load" -v b="$best_load" 'BEGIN {exit !(a < b)}'; then
            best=$LINE
            best_load=$load
        fi
        awk -v a="$best_load" -v m="$LOAD_MAX" 'BEGIN {exit !(a <= m)}' && break
        ((attempt < 3 && RETRIES_USED < RETRIES)) || break
        RETRIES_USED=$((RETRIES_USED + 1))
        say "rep $rep $name: other processes used $load cores (> LOAD_MAX=$LOAD_MAX), measuring again"
    done
    printf '%s\n' "$best" >>"$RESULTS"
}
say "measuring: $REPS repetitions, reference and stow-exporter alternating"
for rep in $(seq 1 "$REPS"); do
    for spec in "${CODECS[@]}"; do
        read -r name _ _ _ _ <<<"$spec"
        if ((rep % 2)); then
            measure ref "$name" "$rep"
            measure ours "$name" "$rep"
        else
            measure ours "$name" "$rep"
            measure ref "$name" "$rep"
        fi
    done
    for key in ct rgb opj; do
        fixed "$key"
        ms=$FIXED_MS
        printf 'fixed\t%s\t%s\t%s\n' "$key" "$rep" "$ms" >>"$RESULTS"
        say "rep $rep fixed cost per reference process ($key): $ms ms"
    done
done

# ---------------------------------------------------------------- report
MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
v=$(dcmdjpeg --version 2>&1 || true)
DCMTK_VERSION=$(awk '/dcmtk:/ {print $3}' <<<"$v" | head -n 1)
v=$(opj_decompress -h 2>&1 || true)
OPJ_VERSION=$(grep -o 'v[0-9][0-9.]*[0-9]' <<<"$v" | head -n 1 || true)
echo
echo "stow-exporter decompression throughput — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $P CPUs, ${MODEL:-unknown CPU}, $(awk '/^MemTotal/ {printf "%.0f GB RAM", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
echo "reference: dcmtk ${DCMTK_VERSION:-?}, OpenJPEG opj_decompress ${OPJ_VERSION:-?}; REPS=$REPS, TARGET_S=$TARGET_S"
echo "data: $DATA"
echo
python3 - "$RESULTS" "$WORK/folders.tsv" "$P" "$RETRIES_USED" "$LOAD_MAX" "${CODECS[@]}" <<'PY'
import statistics, sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
p = int(sys.argv[3])
info = {}
for line in open(sys.argv[2]):
    name, n, frames, dec, comp = line.split("\t")
    info[name] = (int(n), int(frames), int(dec), int(comp))
retries, load_max = int(sys.argv[4]), float(sys.argv[5])
specs = [s.split() for s in sys.argv[6:]]
tools = {s[0]: s[3] for s in specs}
# ".50", ".5": the last component of the transfer syntax UID
ts = {s[0]: "." + s[2].rsplit(".", 1)[1] for s in specs}
def med(kind, name, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == kind and r[1] == name)

fixed = {}
for key in ("ct", "rgb", "opj"):
    fixed[key] = statistics.median(float(r[3]) for r in rows if r[0] == "fixed" and r[1] == key)

print(f"| codec | files × frames | decoded MB | dcmtk/OpenJPEG 1 core MB/s | stow-exporter 1 core MB/s | ratio "
      f"| reference {p} procs MB/s | stow-exporter {p} jobs MB/s | ratio | reference non-codec share |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
slower, scaling = [], []
for spec in specs:
    name = spec[0]
    n, frames, dec, comp = info[name]
    r1, o1 = med("ref", name, 3), med("ours", name, 3)
    rp, op = med("ref", name, 4), med("ours", name, 4)
    # fixed cost of the processes of one pass (one per file for dcmtk, per
    # frame for opj_decompress) / 1-core time of one pass
    if tools[name] == "opj_decompress":
        share = fixed["opj"] / 1000 * frames / (dec / 1e6 / r1)
    else:
        share = fixed[spec[1]] / 1000 * n / (dec / 1e6 / r1)
    print(f"| {name} ({ts[name]}, {tools[name]}) | {n} × {frames // n} | {dec / 1e6:.1f} | {r1:.1f} | {o1:.1f} | {o1 / r1:.2f} "
          f"| {rp:.1f} | {op:.1f} | {op / rp:.2f} | {share * 100:.0f}% |")
    if o1 < r1:
        slower.append(f"{name} (1 core: {o1 / r1:.2f})")
    if op < rp:
        slower.append(f"{name} ({p} jobs: {op / rp:.2f})")
    scaling.append(op / o1)
loads = [float(r[c]) for r in rows if r[0] in ("ref", "ours") for c in (5, 6)]
print()
print(f"reference cost per process outside the codec (start-up, dictionary, file I/O): dcmconv {fixed['ct']:.1f} ms "
      f"(one uncompressed CT file), {fixed['rgb']:.1f} ms (RGB file); opj_decompress {fixed['opj']:.1f} ms (32x32 codestream); "
      f"'non-codec share' = that x processes per pass / 1-core time per pass")
print(f"stow-exporter speed-up from 1 to {p} jobs: median {statistics.median(scaling):.2f}x "
      f"(min {min(scaling):.2f}x, max {max(scaling):.2f}x)")
print(f"other processes' load during the timed runs kept: median {statistics.median(loads):.2f} cores, "
      f"max {max(loads):.2f}; {retries} measurement(s) repeated because of more than {load_max} cores")
print("target 1 (at least as fast as the reference, per codec, on 1 core and with both cores): "
      + ("PASS" if not slower else "FAIL for " + ", ".join(slower)))
few = [f"{s[0]} ({x:.2f}x)" for s, x in zip(specs, scaling) if x < 0.75 * p]
print(f"target 2 (uses all {p} cores when several objects are queued: {p} jobs >= {0.75 * p:.2f}x 1 job, per codec): "
      + ("PASS" if not few else "FAIL for " + ", ".join(few)))
PY
