#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stow_exporter::fuzzing::dimse_command(data);
});
