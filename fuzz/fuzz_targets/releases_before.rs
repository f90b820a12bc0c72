#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| diffota_fuzz_targets::releases_before(data));
