//! The `stow-exporter` binary: parses the command line, sets up logging and
//! the runtime, and runs the command ([`stow_exporter::cli`]).

use std::process::ExitCode;

use clap::Parser;

use stow_exporter::cli::args::{Cli, LogFormat};

/// mimalloc keeps freed large buffers (files, decoded pixels) for reuse
/// instead of returning them with munmap, which serialised parallel
/// transcodes on the kernel's mm lock (bench/README.md, Decompression).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // OpenJPEG reports every tile it decodes at info (through jpeg2k).
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,jpeg2k=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(stow_exporter::cli::run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
