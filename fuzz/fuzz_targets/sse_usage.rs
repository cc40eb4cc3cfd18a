//! The SSE usage reader (`usage::SseScanner`, and `UsageTap` / `decode_and_read` around it):
//! however a stream is cut into frames, the usage read is the same as from the whole stream.
//!
//! Input: byte 0 chooses the frame lengths (`fuzz_support::chunks`; 0 = one byte per frame),
//! the rest is the response body.
#![no_main]

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use libfuzzer_sys::fuzz_target;
use llm_keyproxy::telemetry::usage::{decode_and_read, Finished, Format, SseScanner, Usage, UsageTap};

fn scan<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> Usage {
    let mut usage = Usage::default();
    let mut scanner = SseScanner::default();
    for f in frames {
        scanner.feed(f, &mut usage);
    }
    usage
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let whole = scan([body]);
    fuzz_support::check_usage(&whole);

    let frames = fuzz_support::chunks(body, seed);
    assert_eq!(scan(frames.iter().copied()), whole, "split by seed {seed}");
    if seed != 0 {
        assert_eq!(scan(body.chunks(1)), whole, "split into single bytes");
    }

    // The proxy's path: the tap a text/event-stream response gets, fed frame by frame.
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    let mut tap = UsageTap::for_response(&headers).expect("SSE gets a tap");
    let frames: Vec<Bytes> = frames.iter().map(|f| Bytes::copy_from_slice(f)).collect();
    for f in &frames {
        tap.observe(f);
    }
    match tap.finish() {
        Finished::Ready(u) => assert_eq!(u, whole, "UsageTap"),
        _ => panic!("an uncompressed SSE tap must finish Ready"),
    }
    // A compressed SSE body is read whole after decoding; identity must agree.
    assert_eq!(decode_and_read(Format::Sse, None, &frames), whole);
});
