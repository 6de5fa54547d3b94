//! Feeds arbitrary bytes to the request parser the way a worker would, and
//! checks that splitting the input differently never changes the outcome.
//!
//! The first input byte picks the split points; the rest is the request.
//! Run with `cargo fuzz run request` from the repository root; seed it with the
//! gunicorn corpus (decoded) for a fast start.

#![no_main]

use forkhorn::http::{ChunkedDecoder, Framing, Limits, parse_head};
use libfuzzer_sys::fuzz_target;

/// Small limits, so fuzz inputs of a few hundred bytes reach every limit check.
fn limits() -> Limits {
    Limits {
        request_line: 200,
        fields: 8,
        field_size: 120,
        trailer_bytes: 100,
        chunk_ext_bytes: 40,
    }
}

/// A point in `0..=len` chosen by `seed`.
fn split_point(seed: u8, len: usize) -> usize {
    usize::from(seed) * (len + 1) / 256
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let limits = limits();

    // The head: any prefix must say "read more" or give the very same answer.
    let whole = parse_head(input, &limits);
    let prefix = parse_head(&input[..split_point(seed, input.len())], &limits);
    match (&prefix, &whole) {
        (Ok(None), _) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "a prefix fails differently from the whole"),
        (Ok(Some(a)), Ok(Some(b))) => assert_eq!(a, b, "a prefix parses differently"),
        _ => panic!("prefix gives {prefix:?} but the whole gives {whole:?}"),
    }
    let Ok(Some((head, head_len))) = whole else {
        return;
    };
    assert!(head_len <= input.len());
    if head.framing != Framing::Chunked {
        return;
    }
    let body = &input[head_len..];

    // The body all at once.
    let mut one = ChunkedDecoder::new(&limits);
    let mut one_out = Vec::new();
    let one_result = one.decode(body, &mut one_out, usize::MAX);

    // The body in two reads, split where the seed says.
    let mut two = ChunkedDecoder::new(&limits);
    let mut two_out = Vec::new();
    let cut = split_point(seed.rotate_left(4), body.len());
    let two_result = two
        .decode(&body[..cut], &mut two_out, usize::MAX)
        .and_then(|first| {
            let second = two.decode(&body[first..], &mut two_out, usize::MAX)?;
            Ok(first + second)
        });

    // The body with little room for output on each call.
    let mut small = ChunkedDecoder::new(&limits);
    let mut small_out = Vec::new();
    let room = usize::from(seed % 7) + 1;
    let mut small_result = Ok(0);
    while let Ok(consumed) = small_result {
        match small.decode(&body[consumed..], &mut small_out, room) {
            Ok(0) => break,
            Ok(n) => small_result = Ok(consumed + n),
            Err(e) => small_result = Err(e),
        }
    }

    assert_eq!(one_result, two_result, "split decoding disagrees");
    assert_eq!(
        one_result, small_result,
        "decoding with little room disagrees"
    );
    if let Ok(consumed) = one_result {
        assert!(consumed <= body.len());
        assert_eq!(one_out, two_out);
        assert_eq!(one_out, small_out);
        assert_eq!(one.is_done(), two.is_done());
        assert_eq!(one.is_done(), small.is_done());
        assert_eq!(one.trailers(), two.trailers());
        if !one.is_done() {
            assert_eq!(
                consumed,
                body.len(),
                "an unfinished body consumes all its input"
            );
        }
    }
});
