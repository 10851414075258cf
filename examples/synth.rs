//! Writes a synthetic CT study for benchmarks.
//!
//! Usage: `synth --out DIR --count N [--rows 512] [--columns 512]`
//!
//! Prints the Study Instance UID (one line) on stdout and nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: synth --out DIR --count N [--rows 512] [--columns 512]";

struct Args {
    out: PathBuf,
    count: usize,
    rows: u16,
    columns: u16,
}

fn parse() -> Result<Args, String> {
    let mut out = None;
    let mut count = None;
    let mut rows = 512u16;
    let mut columns = 512u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if name == "-h" || name == "--help" {
            return Err(USAGE.into());
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match name.as_str() {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--count" => count = Some(num(&name, &value()?)?),
            "--rows" => rows = num(&name, &value()?)?,
            "--columns" => columns = num(&name, &value()?)?,
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        out: out.ok_or_else(|| format!("--out is required\n{USAGE}"))?,
        count: count.ok_or_else(|| format!("--count is required\n{USAGE}"))?,
        rows,
        columns,
    })
}

fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{name}: {v:?} is not a valid number\n{USAGE}"))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.count == 0 || args.rows == 0 || args.columns == 0 {
        eprintln!("--count, --rows and --columns must be positive\n{USAGE}");
        return ExitCode::from(2);
    }
    match stow_exporter::synth::write_study(&args.out, args.count, args.rows, args.columns) {
        Ok((study, _paths)) => {
            println!("{study}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synth: {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}
