//! Fuzzes the NBD reply reader: arbitrary bytes from a server, with read, block status and plain
//! requests pending. It must end in an error or consume the input, never panic or loop.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sendense_core::nbd::fuzz_reply_stream(data);
});
