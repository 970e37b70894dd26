#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    facenet_fuzz::image(data);
});
