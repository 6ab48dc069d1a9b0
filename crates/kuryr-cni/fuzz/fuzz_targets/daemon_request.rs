//! Raw bytes through `DaemonRequest::parse`, the daemon's check of what
//! arrives on its socket.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kuryr_cni::fuzzing::check_daemon_request(data);
});
