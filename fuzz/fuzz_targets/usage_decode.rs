//! `usage::decode_and_read` on compressed bodies: arbitrary bytes as gzip or brotli never panic
//! (nor run away: output is capped), and a gzip body reads the same usage as its plain text.
//!
//! Input: byte 0 picks the format (bit 0: JSON / SSE), the encoding (bits 1-2: none, gzip,
//! brotli, or gzip round trip) and the frame lengths (bits 3-7); the rest is the body.
#![no_main]

use std::io::Write;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use llm_keyproxy::telemetry::usage::{decode_and_read, Encoding, Format};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = if selector & 1 == 0 {
        Format::Json
    } else {
        Format::Sse
    };
    let frames: Vec<Bytes> = fuzz_support::chunks(body, selector >> 3)
        .into_iter()
        .map(Bytes::copy_from_slice)
        .collect();
    match (selector >> 1) & 3 {
        0 => fuzz_support::check_usage(&decode_and_read(format, None, &frames)),
        1 => fuzz_support::check_usage(&decode_and_read(format, Some(Encoding::Gzip), &frames)),
        2 => fuzz_support::check_usage(&decode_and_read(format, Some(Encoding::Brotli), &frames)),
        _ => {
            // The body as plain text, gzipped in two members (MultiGzDecoder reads both).
            let half = body.len() / 2;
            let mut gz = Vec::new();
            for part in [&body[..half], &body[half..]] {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(part).expect("in-memory write");
                gz.extend(enc.finish().expect("in-memory write"));
            }
            let plain = decode_and_read(format, None, &[Bytes::copy_from_slice(body)]);
            let gzipped = decode_and_read(format, Some(Encoding::Gzip), &[Bytes::from(gz)]);
            assert_eq!(gzipped, plain, "gzip changed the usage read");
        }
    }
});
