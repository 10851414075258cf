//! The fuzz targets of `fuzz/` in every test run, bounded: each target's
//! function over its seed corpus (`fuzz/seeds/<target>`), the regressions
//! fuzzing found (`fuzz/regressions/<target>`), and a fixed number of
//! inputs mutated from the seeds with a seeded generator (the same inputs
//! on every run, so a failure reproduces). cargo fuzz explores for
//! minutes; this makes sure what it found stays fixed and that a change
//! which breaks a parser's invariants fails CI.

use std::path::{Path, PathBuf};

use stow_exporter::fuzzing;

/// Mutated inputs per target: seconds each in a debug build.
const MUTATIONS: usize = 200_000;

/// Largest mutated input: the parsers' limits are far above, the bugs are
/// in the structure.
const MAX_LEN: usize = 64 * 1024;

fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| std::fs::read(&p).unwrap())
        .collect()
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that parsers treat specially: delimiters, digits, markers.
const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"--B",
    b"--B--",
    b":",
    b"::",
    b"=",
    b"-",
    b",",
    b"9999999999999999999999",
    b"\xff",
    b"\xff\xd8",
    b"\xff\xc0",
    b"\xff\xf7",
    b"\xff\x51",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"DICM",
    b"\"",
    b"<",
    b"&#0;",
    b"PT",
    b"P",
    b"dn: ",
];

/// One mutation of `base`, or a splice of it with `other`.
fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let token = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(i..i, token.iter().copied());
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = 1 + rng.below((v.len() - i).min(64));
                v.drain(i..i + n);
            }
            4 if !v.is_empty() => {
                v.truncate(rng.below(v.len()));
            }
            5 if !v.is_empty() => {
                // Repeat a slice: long runs, deep nesting.
                let i = rng.below(v.len());
                let n = 1 + rng.below((v.len() - i).min(256));
                let slice = v[i..i + n].to_vec();
                for _ in 0..rng.below(16) {
                    v.splice(i..i, slice.iter().copied());
                }
            }
            6 if !other.is_empty() => {
                let i = rng.below(v.len() + 1);
                let j = rng.below(other.len());
                v.truncate(i);
                v.extend_from_slice(&other[j..]);
            }
            _ if v.len() >= 4 => {
                // A little-endian or big-endian number set to an edge.
                let i = rng.below(v.len() - 3);
                let edge: u32 = [0, 1, 0x7fff_ffff, 0xffff_ffff, 0x8000, 0xffff][rng.below(6)];
                if rng.below(2) == 0 {
                    v[i..i + 4].copy_from_slice(&edge.to_le_bytes());
                } else {
                    v[i..i + 4].copy_from_slice(&edge.to_be_bytes());
                }
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v.truncate(MAX_LEN);
    v
}

/// Runs `target` over its seeds, its regressions and the mutations; `extra`
/// are more seed directories (relative to the repository).
fn run(name: &str, target: fn(&[u8]) -> bool, extra: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = files_in(&root.join("fuzz/seeds").join(name));
    for dir in extra {
        seeds.extend(files_in(&root.join(dir)));
    }
    assert!(!seeds.is_empty(), "no seeds for {name}");
    for regression in files_in(&root.join("fuzz/regressions").join(name)) {
        target(&regression);
    }
    // The seeds are valid (fuzz/make_seeds.py): a target that rejects
    // them all tests nothing past its first check.
    let accepted = seeds.iter().filter(|s| target(s)).count();
    assert!(
        accepted > 0,
        "{name} accepts none of its {} seeds",
        seeds.len()
    );
    // Seeded by the name: each target gets its own stream of inputs.
    let mut rng = Rng(name.bytes().fold(0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }));
    assert!(!target(&[]), "{name} accepts empty input");
    let mut mutated_accepted = 0;
    for _ in 0..MUTATIONS {
        let base = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base, other);
        mutated_accepted += usize::from(target(&input));
    }
    // Both sides are reached: mutations that still parse go past the
    // first checks, the others exercise the error paths.
    assert!(
        mutated_accepted > 0 && mutated_accepted < MUTATIONS,
        "{name}: {mutated_accepted} of {MUTATIONS} mutated inputs accepted"
    );
}

#[test]
fn ldif() {
    run("ldif", fuzzing::ldif, &["ldif"]);
}

#[test]
fn multipart() {
    run("multipart", fuzzing::multipart, &[]);
}

#[test]
fn dicom_header() {
    run("dicom_header", fuzzing::dicom_header, &[]);
}

#[test]
fn stow_reply() {
    run("stow_reply", fuzzing::stow_reply, &[]);
}

#[test]
fn schedule() {
    run("schedule", fuzzing::schedule, &[]);
}

#[test]
fn iso_duration() {
    run("iso_duration", fuzzing::iso_duration, &[]);
}

#[test]
fn amqp_task() {
    run("amqp_task", fuzzing::amqp_task, &[]);
}

#[test]
fn codestream() {
    run("codestream", fuzzing::codestream, &[]);
}

#[test]
fn dimse_command() {
    run("dimse_command", fuzzing::dimse_command, &[]);
}

#[test]
fn export_conditions() {
    run("export_conditions", fuzzing::export_conditions, &[]);
}
