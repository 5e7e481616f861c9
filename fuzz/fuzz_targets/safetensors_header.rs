//! Weight files: header parsing and validation of a safetensors file, then
//! reading every tensor it declares (bounded to small files).
#![no_main]

use std::io::Write;

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use streamavatar::model::weights::safetensors_file::MappedSafetensors;

fuzz_target!(|data: &[u8]| {
    if data.len() > 1 << 16 {
        return;
    }
    // The real API maps a file: write the input to this process' scratch file.
    let path = std::env::temp_dir().join(format!("streamavatar-fuzz-{}.safetensors", std::process::id()));
    let Ok(mut f) = std::fs::File::create(&path) else { return };
    if f.write_all(data).is_err() {
        return;
    }
    drop(f);
    if let Ok(file) = MappedSafetensors::open(&path) {
        let names: Vec<String> = file.tensors().keys().cloned().collect();
        for name in names {
            let _ = file.load(&name, DType::F32, &Device::Cpu);
        }
    }
});
