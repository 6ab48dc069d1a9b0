//! One CNI invocation (environment + stdin, see `kuryr_cni::fuzzing`)
//! through `kuryr_cni::handle` with an in-memory daemon.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kuryr_cni::fuzzing::check_invocation(data);
});
