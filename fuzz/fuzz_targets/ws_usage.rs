//! The WebSocket usage tap (`telemetry::ws_usage::WsUsageTap`): never panics on any byte
//! stream, and reads the same usage however the stream is split into reads.
//!
//! Input: byte 0 is the read size (1-256); the rest is the server-to-client byte stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_keyproxy::telemetry::usage::Usage;
use llm_keyproxy::telemetry::ws_usage::WsUsageTap;

fn read(stream: &[u8], split: usize) -> (Vec<Usage>, u64) {
    let mut tap = WsUsageTap::new();
    let mut got = Vec::new();
    for piece in stream.chunks(split) {
        tap.observe(piece, &mut |u| got.push(u));
    }
    (got, tap.unread)
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, stream)) = data.split_first() else {
        return;
    };
    let whole = read(stream, stream.len().max(1));
    assert_eq!(read(stream, usize::from(n) + 1), whole);
    assert_eq!(read(stream, 1), whole);
});
