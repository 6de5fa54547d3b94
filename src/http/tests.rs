//! The framing rules, one test each. Every head is also fed a byte at a time:
//! `accepts` and `rejects` check that each prefix gives "read more" or the very
//! same error, so the parser cannot depend on how the bytes were split.

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::body::{BodyError, ChunkedDecoder};
use super::parse::{Framing, Limits, MAX_FIELDS, ParseError, RequestHead, Version, parse_head};
use super::response::{
    ResponseError, ResponseFraming, error_response, has_forbidden_byte, http_date, write_chunk,
    write_head, write_last_chunk,
};

fn accepts_with(limits: &Limits, bytes: &[u8]) -> RequestHead {
    for end in 0..bytes.len() {
        if let Ok(Some(_)) | Err(_) = parse_head(&bytes[..end], limits) {
            panic!(
                "prefix of {} bytes already gives {:?}",
                end,
                parse_head(&bytes[..end], limits)
            );
        }
    }
    match parse_head(bytes, limits) {
        Ok(Some((head, n))) => {
            assert_eq!(n, bytes.len(), "head length");
            head
        }
        other => panic!("expected a head, got {other:?}"),
    }
}

/// The defaults, except that Host may be left out: most heads here are about
/// other rules, and the Host rule has its own tests (see "Host and other
/// singleton fields").
fn host_optional() -> Limits {
    Limits {
        permit_missing_host: true,
        ..Limits::default()
    }
}

fn accepts(bytes: &[u8]) -> RequestHead {
    accepts_with(&host_optional(), bytes)
}

fn rejects_with(limits: &Limits, bytes: &[u8]) -> ParseError {
    let Err(error) = parse_head(bytes, limits) else {
        panic!("expected an error, got {:?}", parse_head(bytes, limits));
    };
    for end in 0..bytes.len() {
        match parse_head(&bytes[..end], limits) {
            Ok(None) => {}
            Err(e) if e == error => {}
            other => panic!("prefix of {end} bytes gives {other:?}, the whole gives {error:?}"),
        }
    }
    error
}

fn rejects(bytes: &[u8]) -> ParseError {
    rejects_with(&host_optional(), bytes)
}

fn status(bytes: &[u8]) -> u16 {
    rejects(bytes).status()
}

/// `GET / HTTP/1.1` with these field lines (each given without its CRLF).
fn get_with(fields: &[&str]) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for field in fields {
        head.extend_from_slice(field.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn post_with(fields: &[&str]) -> Vec<u8> {
    let mut head = get_with(fields);
    head.splice(..3, *b"POST");
    head
}

// ---- request line ----

#[test]
fn parses_a_simple_request() {
    let head = accepts(b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n");
    assert_eq!(head.method, "GET");
    assert_eq!(head.target, "/index.html?q=1");
    assert_eq!(head.version, Version::Http11);
    assert_eq!(
        head.headers,
        vec![
            ("Host".to_owned(), b"example.com".to_vec()),
            ("Accept".to_owned(), b"*/*".to_vec())
        ]
    );
    assert_eq!(head.framing, Framing::None);
    assert!(head.keep_alive);
    assert!(!head.expect_continue);
}

#[test]
fn leaves_pipelined_bytes_after_the_head() {
    let input = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    let (head, n) = parse_head(input, &host_optional()).unwrap().unwrap();
    assert_eq!((head.target.as_str(), n), ("/a", 19));
    let (head, _) = parse_head(&input[n..], &host_optional()).unwrap().unwrap();
    assert_eq!(head.target, "/b");
}

#[test]
fn accepts_any_uppercase_token_method() {
    for method in ["PROPFIND", "M-SEARCH", "PATCH", "-BLARGH", "X_1.2!"] {
        let head = accepts(format!("{method} / HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!(head.method, method);
    }
}

#[test]
fn rejects_lowercase_methods_like_gunicorn() {
    for method in ["get", "Get", "-bl"] {
        let error = rejects(format!("{method} / HTTP/1.1\r\n\r\n").as_bytes());
        assert!(
            matches!(error, ParseError::InvalidMethod { .. }),
            "{method}: {error:?}"
        );
        assert_eq!(error.status(), 400);
    }
}

#[test]
fn rejects_methods_that_are_not_tokens() {
    assert_eq!(status(b"bla:rgh /foo HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(status(b"GET: / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(status(b"G(T / HTTP/1.1\r\n\r\n"), 400);
}

#[test]
fn rejects_request_lines_without_three_parts() {
    for line in ["GET HTTP/1.1", "GET /", "GET", "/ HTTP/1.1"] {
        let error = rejects(format!("{line}\r\n\r\n").as_bytes());
        assert_eq!(error.status(), 400, "{line}: {error}");
    }
}

#[test]
fn rejects_extra_spaces_in_the_request_line() {
    for line in [
        "GET  / HTTP/1.1",
        "GET /  HTTP/1.1",
        " GET / HTTP/1.1",
        "GET / HTTP/1.1 ",
        "GET / HTTP/1.1 x",
    ] {
        let error = rejects(format!("{line}\r\n\r\n").as_bytes());
        assert!(
            matches!(error, ParseError::MalformedRequestLine(_)),
            "{line:?}: {error:?}"
        );
    }
}

#[test]
fn rejects_tabs_and_control_bytes_in_the_request_line_as_soon_as_they_arrive() {
    assert_eq!(
        rejects(b"GET\t/ HTTP/1.1\r\n\r\n"),
        ParseError::InvalidRequestLineByte(b'\t')
    );
    assert_eq!(
        rejects(b"GET\0PROXY /foo HTTP/1.1\r\n\r\n"),
        ParseError::InvalidRequestLineByte(0)
    );
    // No line end yet: the byte alone condemns the line.
    assert_eq!(
        parse_head(b"GET /\x7f", &Limits::default()),
        Err(ParseError::InvalidRequestLineByte(0x7f))
    );
}

#[test]
fn rejects_raw_non_ascii_in_the_request_line() {
    assert_eq!(status(b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(status(b"GET\xc3\x9f /germans HTTP/1.1\r\n\r\n"), 400);
}

#[test]
fn skips_empty_lines_before_the_request_line() {
    let input = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    let head = accepts(input);
    assert_eq!(head.target, "/");
}

#[test]
fn rejects_a_request_line_longer_than_the_limit_with_414_before_it_ends() {
    let limits = Limits {
        request_line: 20,
        ..host_optional()
    };
    assert_eq!(
        rejects_with(
            &limits,
            b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n"
        )
        .status(),
        414
    );
    assert_eq!(
        parse_head(&[b'A'; 21], &limits),
        Err(ParseError::RequestLineTooLong { limit: 20 })
    );
    // Exactly at the limit (CRLF excluded) is fine.
    accepts_with(&limits, b"GET /aaaaaa HTTP/1.1\r\n\r\n");
}

#[test]
fn counts_leading_empty_lines_towards_the_request_line_limit() {
    let limits = Limits {
        request_line: 20,
        ..host_optional()
    };
    assert_eq!(
        parse_head(&b"\r\n".repeat(11), &limits),
        Err(ParseError::RequestLineTooLong { limit: 20 })
    );
}

#[test]
fn request_line_limit_zero_means_unlimited() {
    let limits = Limits {
        request_line: 0,
        ..host_optional()
    };
    let target = "a".repeat(10_000);
    let head = accepts_with(
        &limits,
        format!("GET /{target} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert_eq!(head.target.len(), 10_001);
}

// ---- version ----

#[test]
fn reads_http_1_0_and_1_1() {
    assert_eq!(accepts(b"GET / HTTP/1.0\r\n\r\n").version, Version::Http10);
    assert_eq!(accepts(b"GET / HTTP/1.1\r\n\r\n").version, Version::Http11);
}

#[test]
fn answers_505_to_well_formed_unsupported_versions() {
    for version in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0", "HTTP/9.9"] {
        let error = rejects(format!("GET / {version}\r\n\r\n").as_bytes());
        assert_eq!(error.status(), 505, "{version}");
    }
}

#[test]
fn answers_505_to_the_http2_connection_preface() {
    assert_eq!(status(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
}

#[test]
fn rejects_malformed_versions_with_400() {
    for version in [
        "HTTP/1.1x",
        "HTTP/01.1",
        "http/1.1",
        "HTTP/1",
        "HTTP/1.10",
        "HTTP/111",
        "FTP/1.1",
        "HTTP/0.99",
    ] {
        let error = rejects(format!("GET / {version}\r\n\r\n").as_bytes());
        assert!(
            matches!(error, ParseError::MalformedVersion(_)),
            "{version}: {error:?}"
        );
        assert_eq!(error.status(), 400);
    }
}

// ---- request target ----

#[test]
fn accepts_origin_form_targets_as_sent() {
    for target in [
        "/",
        "///keeping_slashes",
        "/with_\"quotes\"?foo=\"bar\"",
        "/a?b#frag",
        "/%20",
    ] {
        assert_eq!(
            accepts(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes()).target,
            target
        );
    }
}

#[test]
fn accepts_absolute_form_targets() {
    for target in [
        "http://example.com/foo?q=1",
        "https://example.com",
        "http://[::1]:8080/foo",
        "http://user:pass@example.com:8080/foo",
        "http://example.com:/x",
    ] {
        assert_eq!(
            accepts(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes()).target,
            target
        );
    }
}

#[test]
fn rejects_absolute_form_targets_with_a_bad_authority() {
    for target in [
        "s://]ufd/:",
        "http:///path",
        "http://exa%mple/",
        "http://host:80x/",
        "http://[::1/",
    ] {
        let error = rejects(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
        assert!(
            matches!(error, ParseError::InvalidTarget { .. }),
            "{target}: {error:?}"
        );
    }
}

#[test]
fn accepts_the_asterisk_form_only_with_options() {
    assert_eq!(accepts(b"OPTIONS * HTTP/1.1\r\n\r\n").target, "*");
    assert_eq!(status(b"GET * HTTP/1.1\r\n\r\n"), 400);
}

#[test]
fn accepts_the_authority_form_only_with_connect() {
    assert_eq!(
        accepts(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n").target,
        "example.com:443"
    );
    assert_eq!(
        accepts(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n").target,
        "[::1]:443"
    );
    assert_eq!(status(b"GET example.com:443 HTTP/1.1\r\n\r\n"), 400);
}

#[test]
fn rejects_connect_without_host_and_port() {
    for target in [
        "/",
        "example.com",
        "example.com:",
        "user@example.com:443",
        "http://example.com:443/",
    ] {
        assert_eq!(
            status(format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes()),
            400,
            "{target}"
        );
    }
}

#[test]
fn rejects_relative_targets() {
    for target in ["foo", "foo/bar", "?q=1", "#frag", "./x"] {
        let error = rejects(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
        assert!(
            matches!(error, ParseError::InvalidTarget { .. }),
            "{target}: {error:?}"
        );
    }
}

// ---- line ends and field syntax ----

#[test]
fn rejects_bare_lf_line_ends_anywhere_in_the_head() {
    assert_eq!(
        rejects(b"\nGET / HTTP/1.1\r\n\r\n"),
        ParseError::BareLf { line: 1 }
    );
    assert_eq!(
        rejects(b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
        ParseError::BareLf { line: 1 }
    );
    assert_eq!(
        rejects(b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"),
        ParseError::BareLf { line: 2 }
    );
    assert_eq!(
        rejects(b"GET / HTTP/1.1\r\nHost: a\r\n\n"),
        ParseError::BareLf { line: 3 }
    );
}

#[test]
fn rejects_a_bare_cr_anywhere_in_the_head() {
    assert_eq!(
        rejects(b"\rGET / HTTP/1.1\r\n\r\n"),
        ParseError::BareCr { line: 1 }
    );
    assert_eq!(
        rejects(b"GET /\rx HTTP/1.1\r\n\r\n"),
        ParseError::BareCr { line: 1 }
    );
    assert_eq!(
        rejects(b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"),
        ParseError::BareCr { line: 2 }
    );
    assert_eq!(
        rejects(b"GET / HTTP/1.1\r\nX\r: b\r\n\r\n"),
        ParseError::BareCr { line: 2 }
    );
    assert_eq!(
        rejects(b"GET / HTTP/1.1\r\nX: b\r\n\rx"),
        ParseError::BareCr { line: 3 }
    );
}

#[test]
fn rejects_obsolete_line_folding() {
    assert_eq!(
        rejects(&get_with(&["Long: one", " two"])),
        ParseError::ObsoleteLineFolding { line: 3 }
    );
    assert_eq!(
        rejects(&get_with(&["Long: one", "\ttwo"])),
        ParseError::ObsoleteLineFolding { line: 3 }
    );
    // Whitespace before the first field line is the same mistake (RFC 9112 §2.2).
    assert_eq!(
        rejects(&get_with(&[" Host: a"])),
        ParseError::ObsoleteLineFolding { line: 2 }
    );
}

#[test]
fn rejects_whitespace_between_field_name_and_colon() {
    let error = rejects(&get_with(&["Content-Length : 3"]));
    assert_eq!(
        error,
        ParseError::WhitespaceAfterFieldName("Content-Length".to_owned())
    );
    assert_eq!(error.status(), 400);
    assert_eq!(status(&get_with(&["Host\t: a"])), 400);
}

#[test]
fn rejects_field_names_that_are_not_tokens() {
    for field in [
        "ba\0z: bar",
        "X(y): 1",
        "Content-Length\u{df}: 3",
        "X/Y: 1",
        "{}: 1",
    ] {
        let error = rejects(&get_with(&[field]));
        assert!(
            matches!(error, ParseError::InvalidFieldName(_)),
            "{field:?}: {error:?}"
        );
    }
    assert_eq!(
        rejects(&get_with(&[": empty"])),
        ParseError::InvalidFieldName(String::new())
    );
}

#[test]
fn accepts_field_names_with_any_token_characters() {
    let head = accepts(&get_with(&[
        "X.Custom|Pipe: ok",
        "Transfer_Encoding: tricked",
        "aaaa:++++",
    ]));
    assert_eq!(head.header("x.custom|pipe"), Some(&b"ok"[..]));
    assert_eq!(head.header("transfer_encoding"), Some(&b"tricked"[..]));
    assert_eq!(head.framing, Framing::None);
}

#[test]
fn rejects_field_lines_without_a_colon() {
    assert!(matches!(
        rejects(&get_with(&["NoColonHere"])),
        ParseError::MissingColon(_)
    ));
}

#[test]
fn rejects_control_characters_in_field_values() {
    for byte in [0x00u8, 0x01, 0x07, 0x1b, 0x1f, 0x7f] {
        let mut head = b"GET / HTTP/1.1\r\nX-Value: plain".to_vec();
        head.extend_from_slice(&[byte, b'x', b'\r', b'\n', b'\r', b'\n']);
        assert_eq!(
            rejects(&head),
            ParseError::InvalidFieldValue {
                name: "X-Value".to_owned(),
                byte
            }
        );
    }
}

#[test]
fn accepts_htab_and_obs_text_in_field_values() {
    let head = accepts(b"GET / HTTP/1.1\r\nX-Value: a\tb caf\xc3\xa9\r\n\r\n");
    assert_eq!(head.header("X-Value"), Some(&b"a\tb caf\xc3\xa9"[..]));
}

#[test]
fn trims_whitespace_around_field_values() {
    let head = accepts(&get_with(&["Name: \t value \t ", "Empty:", "Spaces:   "]));
    assert_eq!(head.header("name"), Some(&b"value"[..]));
    assert_eq!(head.header("empty"), Some(&b""[..]));
    assert_eq!(head.header("spaces"), Some(&b""[..]));
}

#[test]
fn header_lookup_is_case_insensitive_and_gives_the_first_value() {
    let head = accepts(&get_with(&["If-Match: bazinga!", "if-match: large-sound"]));
    assert_eq!(head.header("IF-MATCH"), Some(&b"bazinga!"[..]));
    assert_eq!(head.header("missing"), None);
    assert_eq!(head.headers[1].0, "if-match", "names are kept as sent");
}

// ---- limits ----

#[test]
fn rejects_more_fields_than_the_limit_with_431_before_the_head_ends() {
    let limits = Limits {
        fields: 3,
        ..host_optional()
    };
    accepts_with(&limits, &get_with(&["A: 1", "B: 2", "C: 3"]));
    let error = rejects_with(&limits, &get_with(&["A: 1", "B: 2", "C: 3", "D: 4"]));
    assert_eq!(error, ParseError::TooManyFields { limit: 3 });
    assert_eq!(error.status(), 431);
    assert!(parse_head(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD", &limits).is_err());
}

#[test]
fn reads_heads_with_more_fields_than_fit_on_the_stack() {
    let fields: Vec<String> = (0..300).map(|i| format!("X-{i}: {i}")).collect();
    let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    let limits = Limits {
        fields: 1000,
        ..host_optional()
    };
    assert_eq!(accepts_with(&limits, &get_with(&fields)).headers.len(), 300);
}

#[test]
fn field_limit_zero_means_gunicorns_maximum() {
    assert_eq!(
        Limits {
            fields: 0,
            ..host_optional()
        }
        .max_fields(),
        MAX_FIELDS
    );
    assert_eq!(
        Limits {
            fields: 1_000_000,
            ..host_optional()
        }
        .max_fields(),
        MAX_FIELDS
    );
    assert_eq!(Limits::default().max_fields(), 100);
}

#[test]
fn rejects_a_field_line_longer_than_the_limit_with_431_before_it_ends() {
    // gunicorn counts the CRLF: a 20-byte limit allows 18 bytes of field line.
    let limits = Limits {
        field_size: 20,
        ..host_optional()
    };
    accepts_with(&limits, &get_with(&["X: 345678901234567"]));
    let error = rejects_with(&limits, &get_with(&["X: 3456789012345678"]));
    assert_eq!(error, ParseError::FieldTooLong { line: 2, limit: 20 });
    assert_eq!(error.status(), 431);
    let partial = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(100));
    assert_eq!(
        parse_head(partial.as_bytes(), &limits).map_err(|e| e.status()),
        Err(431)
    );
}

#[test]
fn field_size_limit_zero_means_unlimited() {
    let limits = Limits {
        field_size: 0,
        ..host_optional()
    };
    let value = "v".repeat(10_000);
    let head = accepts_with(&limits, &get_with(&[&format!("Big: {value}")]));
    assert_eq!(head.header("big").map(<[u8]>::len), Some(10_000));
}

#[test]
fn reports_the_first_problem_in_reading_order() {
    // A bad name byte on line 2 wins over the too-long line 3, however split.
    let limits = Limits {
        field_size: 20,
        ..host_optional()
    };
    let error = rejects_with(
        &limits,
        &get_with(&["B\0d: 1", &format!("X: {}", "a".repeat(50))]),
    );
    assert_eq!(error.status(), 400);
}

// ---- Content-Length ----

#[test]
fn reads_content_length_framing() {
    assert_eq!(
        accepts(&post_with(&["Content-Length: 5"])).framing,
        Framing::Length(5)
    );
    assert_eq!(
        accepts(&post_with(&["conTENT-Length: 0"])).framing,
        Framing::Length(0)
    );
    assert_eq!(
        accepts(&post_with(&["Content-Length: 007"])).framing,
        Framing::Length(7)
    );
    let max = accepts(&post_with(&["Content-Length: 18446744073709551615"]));
    assert_eq!(max.framing, Framing::Length(u64::MAX));
}

#[test]
fn rejects_content_lengths_that_are_not_plain_digits() {
    for value in [
        "-1",
        "+1",
        "-0",
        "0x10",
        "1 2",
        "0_1",
        "1.0",
        "bla-bla-bla",
        "",
        "1e3",
    ] {
        let error = rejects(&post_with(&[&format!("Content-Length: {value}")]));
        assert!(
            matches!(error, ParseError::InvalidContentLength(_)),
            "{value:?}: {error:?}"
        );
    }
}

#[test]
fn rejects_content_lengths_beyond_u64() {
    let error = rejects(&post_with(&["Content-Length: 18446744073709551616"]));
    assert!(matches!(error, ParseError::InvalidContentLength(_)));
}

#[test]
fn rejects_conflicting_content_lengths() {
    let error = rejects(&post_with(&["Content-Length: 3", "Content-Length: 4"]));
    assert_eq!(error, ParseError::ConflictingContentLength(3, 4));
    assert_eq!(error.to_string(), "content-length values disagree: 3 vs 4");
    assert_eq!(error.status(), 400);
}

#[test]
fn accepts_repeated_content_length_fields_that_agree() {
    let head = accepts(&post_with(&["Content-Length: 5", "content-length: 5"]));
    assert_eq!(head.framing, Framing::Length(5));
}

#[test]
fn rejects_content_length_lists_even_when_they_agree() {
    // gunicorn's corpus (rfc9112_smuggle_cl_list_form_01) refuses "5, 5".
    let error = rejects(&post_with(&["Content-Length: 5, 5"]));
    assert!(matches!(error, ParseError::ContentLengthList(_)));
    assert_eq!(error.status(), 400);
}

// ---- Transfer-Encoding ----

#[test]
fn reads_chunked_framing_case_insensitively() {
    for value in ["chunked", "Chunked", "CHUNKED", " chunked "] {
        let head = accepts(&post_with(&[&format!("Transfer-Encoding: {value}")]));
        assert_eq!(head.framing, Framing::Chunked, "{value:?}");
    }
}

#[test]
fn answers_501_to_codings_before_a_final_chunked_by_default() {
    // RFC 9112 §6.1: forkhorn decodes no coding but chunked.
    for fields in [
        &["Transfer-Encoding: gzip, chunked"][..],
        &["Transfer-Encoding: identity,chunked"],
        &["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"],
        &["Transfer-Encoding: foo, chunked"],
    ] {
        let error = rejects(&post_with(fields));
        assert!(
            matches!(error, ParseError::UnsupportedTransferCoding(_)),
            "{fields:?}: {error:?}"
        );
        assert_eq!(error.status(), 501, "{fields:?}");
    }
}

fn codings_permitted() -> Limits {
    Limits {
        permit_transfer_codings: true,
        ..host_optional()
    }
}

#[test]
fn accepts_known_codings_before_a_final_chunked_when_permitted() {
    // gunicorn's valid/025 and friends: the app gets the de-chunked bytes.
    for fields in [
        &["Transfer-Encoding: gzip, chunked"][..],
        &["Transfer-Encoding: identity,chunked"],
        &["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"],
        &["Transfer-Encoding: deflate, , chunked"],
    ] {
        assert_eq!(
            accepts_with(&codings_permitted(), &post_with(fields)).framing,
            Framing::Chunked,
            "{fields:?}"
        );
    }
    // Unknown codings stay refused, and a final coding must still be chunked.
    let unknown = rejects_with(
        &codings_permitted(),
        &post_with(&["Transfer-Encoding: foo, chunked"]),
    );
    assert_eq!(unknown.status(), 501);
    let gzip = rejects_with(
        &codings_permitted(),
        &post_with(&["Transfer-Encoding: gzip"]),
    );
    assert_eq!(gzip.status(), 400);
}

#[test]
fn rejects_content_length_together_with_transfer_encoding() {
    for fields in [
        &["Content-Length: 3", "Transfer-Encoding: chunked"][..],
        &["Transfer-Encoding: chunked", "Content-Length: 3"],
        &["Content-Length: 12", "Transfer-Encoding: \tchunked"],
    ] {
        assert_eq!(
            rejects(&post_with(fields)),
            ParseError::ContentLengthWithTransferEncoding
        );
    }
}

#[test]
fn rejects_transfer_encoding_in_http_1_0() {
    let error = rejects(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(error, ParseError::TransferEncodingOnHttp10);
    assert_eq!(error.status(), 400);
}

#[test]
fn rejects_codings_after_chunked() {
    for fields in [
        &["Transfer-Encoding: chunked, gzip"][..],
        &["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
        &["Transfer-Encoding: identity, chunked, identity, chunked"],
    ] {
        let error = rejects(&post_with(fields));
        assert!(
            matches!(error, ParseError::ChunkedNotFinal(_)),
            "{fields:?}: {error:?}"
        );
        assert_eq!(error.status(), 400);
    }
}

#[test]
fn rejects_chunked_listed_twice() {
    assert_eq!(
        rejects(&post_with(&["Transfer-Encoding: chunked, chunked"])),
        ParseError::ChunkedTwice
    );
    let twice = ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"];
    assert_eq!(rejects(&post_with(&twice)), ParseError::ChunkedTwice);
}

#[test]
fn answers_400_when_the_final_coding_is_not_chunked() {
    // RFC 9112 §6.3: the body length cannot be known; 400 and close. Unknown
    // codings alone, too: that they are unknown matters less than that the
    // body has no end.
    for value in [
        "gzip",
        "identity",
        "gzip, identity",
        "xchunked",
        "chunked-ish",
        "foo",
    ] {
        let error = rejects(&post_with(&[&format!("Transfer-Encoding: {value}")]));
        assert!(
            matches!(error, ParseError::FinalCodingNotChunked(_)),
            "{value}: {error:?}"
        );
        assert_eq!(error.status(), 400, "{value}");
    }
}

#[test]
fn rejects_malformed_transfer_encoding_values() {
    for value in ["chunked;q=1", "\"chunked\"", "", " , "] {
        let error = rejects(&post_with(&[&format!("Transfer-Encoding: {value}")]));
        assert!(
            matches!(error, ParseError::MalformedTransferEncoding(_)),
            "{value:?}: {error:?}"
        );
    }
}

// ---- Host and other singleton fields ----

#[test]
fn rejects_a_duplicate_host() {
    let error = rejects(&get_with(&["Host: localhost", "Host: evil.example.com"]));
    assert_eq!(error, ParseError::DuplicateField("host"));
    assert_eq!(error.status(), 400);
}

#[test]
fn rejects_a_duplicate_content_type() {
    // gunicorn's corpus invalid/041: Content-Type is a singleton (RFC 9110 §5.3).
    let error = rejects(&get_with(&[
        "Content-Type: application/json",
        "Content-Type: text/html",
    ]));
    assert_eq!(error, ParseError::DuplicateField("content-type"));
}

#[test]
fn rejects_http_1_1_without_host_by_default() {
    // RFC 9112 §3.2: a server MUST answer 400.
    let error = rejects_with(&Limits::default(), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(error, ParseError::MissingHost);
    assert_eq!(error.status(), 400);
    let error = rejects_with(&Limits::default(), b"GET / HTTP/1.1\r\nX-Host: a\r\n\r\n");
    assert_eq!(error, ParseError::MissingHost);
}

#[test]
fn accepts_http_1_1_without_host_when_permitted_and_1_0_always() {
    assert_eq!(accepts(b"GET / HTTP/1.1\r\n\r\n").header("host"), None);
    let head = accepts_with(&Limits::default(), b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(head.header("host"), None);
    // An empty Host is a Host (RFC 9112 §3.2: for a URI without authority).
    accepts_with(&Limits::default(), b"GET / HTTP/1.1\r\nHost:\r\n\r\n");
}

#[test]
fn accepts_hosts_that_are_valid_authorities() {
    for host in [
        "example.com",
        "0.0.0.0:5000",
        "0.0.0.0=5000",
        "[::1]:8080",
        "my_host.local.",
        "",
    ] {
        accepts(&get_with(&[&format!("Host: {host}")]));
    }
}

#[test]
fn rejects_hosts_that_are_not_authorities() {
    for host in [
        "a b",
        "exa/mple",
        "[::1",
        "host:port",
        "user@host",
        "host:99999",
    ] {
        let error = rejects(&get_with(&[&format!("Host: {host}")]));
        assert!(
            matches!(error, ParseError::InvalidHost(_)),
            "{host:?}: {error:?}"
        );
    }
}

// ---- keep-alive ----

#[test]
fn http_1_1_keeps_the_connection_unless_told_to_close() {
    assert!(accepts(b"GET / HTTP/1.1\r\n\r\n").keep_alive);
    assert!(!accepts(&get_with(&["Connection: close"])).keep_alive);
    assert!(!accepts(&get_with(&["Connection: Close"])).keep_alive);
    assert!(!accepts(&get_with(&["Connection: upgrade, close"])).keep_alive);
    assert!(!accepts(&get_with(&["Connection: keep-alive", "Connection: close"])).keep_alive);
}

#[test]
fn http_1_0_closes_the_connection_unless_asked_to_keep_it() {
    assert!(!accepts(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(accepts(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!accepts(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
}

// ---- Expect ----

#[test]
fn flags_expect_100_continue() {
    assert!(accepts(&post_with(&["Expect: 100-continue", "Content-Length: 5"])).expect_continue);
    assert!(accepts(&post_with(&["Expect: 100-Continue"])).expect_continue);
}

#[test]
fn ignores_100_continue_from_http_1_0_clients() {
    assert!(!accepts(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
}

#[test]
fn answers_417_to_other_expectations() {
    for value in ["200-ok", "100-continue, foo", "100-continuex"] {
        let error = rejects(&post_with(&[&format!("Expect: {value}")]));
        assert!(
            matches!(error, ParseError::UnsupportedExpectation(_)),
            "{value}: {error:?}"
        );
        assert_eq!(error.status(), 417);
    }
}

// ---- error messages ----

#[test]
fn error_messages_are_lowercase_and_escape_client_bytes() {
    let error = rejects(&get_with(&["ba\0z: bar"]));
    assert_eq!(error.to_string(), "invalid header field name \"ba\\x00\"");
    let long = rejects(format!("GET / HTTP/{}\r\n\r\n", "1".repeat(200)).as_bytes()).to_string();
    assert!(long.len() < 150, "client bytes are shortened: {long}");
    for error in [
        ParseError::BareLf { line: 1 },
        ParseError::TooManyFields { limit: 1 },
        ParseError::UnsupportedVersion("HTTP/2.0".into()),
    ] {
        let message = error.to_string();
        assert!(
            message.starts_with(|c: char| c.is_ascii_lowercase()),
            "{message}"
        );
    }
}

// ---- chunked bodies ----

/// Decodes `input` whole and a byte at a time, checks both agree, and returns
/// (body, bytes consumed, trailers) or the error.
type Decoded = (Vec<u8>, usize, Vec<(String, Vec<u8>)>);

fn decode_with(limits: &Limits, input: &[u8]) -> Result<Decoded, BodyError> {
    let whole = {
        let mut decoder = ChunkedDecoder::new(limits);
        let mut body = Vec::new();
        decoder.decode(input, &mut body, usize::MAX).map(|n| {
            (
                body,
                if decoder.is_done() { n } else { usize::MAX },
                decoder.trailers().to_vec(),
            )
        })
    };
    let bytewise = {
        let mut decoder = ChunkedDecoder::new(limits);
        let mut body = Vec::new();
        let mut consumed = 0;
        let mut result = Ok(());
        for b in input {
            match decoder.decode(std::slice::from_ref(b), &mut body, usize::MAX) {
                Ok(n) => consumed += n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let consumed = if decoder.is_done() {
            consumed
        } else {
            usize::MAX
        };
        result.map(|()| (body, consumed, decoder.trailers().to_vec()))
    };
    assert_eq!(whole, bytewise, "decoding whole and byte by byte disagree");
    whole
}

fn decode(input: &[u8]) -> Result<Decoded, BodyError> {
    decode_with(&Limits::default(), input)
}

fn body_of(input: &[u8]) -> Vec<u8> {
    match decode(input) {
        Ok((body, n, _)) if n != usize::MAX => body,
        other => panic!("expected a complete body, got {other:?}"),
    }
}

#[test]
fn decodes_chunks_and_stops_right_after_the_final_crlf() {
    let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
    let (body, consumed, trailers) = decode(input).unwrap();
    assert_eq!(body, b"hello world");
    assert_eq!(&input[consumed..], b"GET /next HTTP/1.1\r\n\r\n");
    assert!(trailers.is_empty());
}

#[test]
fn consumes_nothing_once_done() {
    let mut decoder = ChunkedDecoder::new(&Limits::default());
    let mut body = Vec::new();
    assert_eq!(decoder.decode(b"0\r\n\r\n", &mut body, 10), Ok(5));
    assert!(decoder.is_done());
    assert_eq!(decoder.decode(b"0\r\n\r\n", &mut body, 10), Ok(0));
}

#[test]
fn reports_an_unfinished_body_as_not_done() {
    for input in [
        &b"5\r\nhel"[..],
        b"0\r\n",
        b"0\r\nX: 1\r\n",
        b"5\r\nhello\r\n",
    ] {
        assert_eq!(
            decode(input).map(|(_, n, _)| n),
            Ok(usize::MAX),
            "{input:?}"
        );
    }
}

#[test]
fn produces_at_most_max_out_bytes_per_call() {
    let input = b"a\r\n0123456789\r\n0\r\n\r\n";
    let mut decoder = ChunkedDecoder::new(&Limits::default());
    let mut body = Vec::new();
    let first = decoder.decode(input, &mut body, 4).unwrap();
    assert_eq!((body.as_slice(), first), (&b"0123"[..], 7));
    let second = decoder.decode(&input[first..], &mut body, 0).unwrap();
    assert_eq!(second, 0, "no room, no progress inside chunk data");
    let rest = decoder.decode(&input[first..], &mut body, 100).unwrap();
    assert_eq!(first + rest, input.len());
    assert_eq!(body, b"0123456789");
    assert!(decoder.is_done());
}

#[test]
fn accepts_leading_zeros_uppercase_hex_and_zero_runs() {
    assert_eq!(body_of(b"0005\r\nhello\r\n000\r\n\r\n"), b"hello");
    assert_eq!(body_of(b"A\r\n0123456789\r\n0\r\n\r\n"), b"0123456789");
}

#[test]
fn ignores_chunk_extensions() {
    assert_eq!(
        body_of(b"5; some; parameters=stuff\r\nhello\r\n6; blahblah; blah\r\n world\r\n0\r\n\r\n"),
        b"hello world"
    );
    assert_eq!(
        body_of(b"5;foo=\"bar baz\"\r\nhello\r\n0;last\r\n\r\n"),
        b"hello"
    );
    assert_eq!(
        body_of(b"5 ;a = b ;c=\"q\\\"x\"\r\nhello\r\n0\r\n\r\n"),
        b"hello"
    );
}

#[test]
fn rejects_signs_and_prefixes_in_chunk_sizes() {
    assert_eq!(
        decode(b"-5\r\nhello\r\n0\r\n\r\n"),
        Err(BodyError::InvalidChunkSize(b'-'))
    );
    assert_eq!(
        decode(b"+5\r\nhello\r\n0\r\n\r\n"),
        Err(BodyError::InvalidChunkSize(b'+'))
    );
    assert_eq!(
        decode(b"0x5\r\nhello\r\n0\r\n\r\n"),
        Err(BodyError::InvalidChunkExtension(b'x'))
    );
    assert_eq!(
        decode(b"6_0\r\n world\r\n0\r\n\r\n"),
        Err(BodyError::InvalidChunkExtension(b'_'))
    );
}

#[test]
fn rejects_whitespace_around_a_chunk_size_without_an_extension() {
    assert_eq!(
        decode(b" 5\r\nhello\r\n0\r\n\r\n"),
        Err(BodyError::InvalidChunkSize(b' '))
    );
    assert_eq!(
        decode(b"5\r\nhello\r\n0 \r\n\r\n"),
        Err(BodyError::WhitespaceBeforeLineEnd)
    );
    assert_eq!(
        decode(b"5;a \r\nhello\r\n0\r\n\r\n"),
        Err(BodyError::WhitespaceBeforeLineEnd)
    );
}

#[test]
fn rejects_an_empty_chunk_size() {
    assert_eq!(
        decode(b"\r\nhello\r\n0\r\n\r\n"),
        Err(BodyError::EmptyChunkSize)
    );
    assert_eq!(
        decode(b" ;foo=bar\r\nhello\r\n0\r\n\r\n"),
        Err(BodyError::InvalidChunkSize(b' '))
    );
    assert_eq!(
        decode(b";foo=bar\r\nhello\r\n0\r\n\r\n"),
        Err(BodyError::InvalidChunkSize(b';'))
    );
}

#[test]
fn rejects_chunk_sizes_over_16_hex_digits() {
    assert_eq!(
        decode(b"00000000000000005\r\nhello\r\n0\r\n\r\n"),
        Err(BodyError::ChunkSizeTooLong)
    );
    // 16 digits is fine (and would be a very long chunk).
    assert_eq!(
        decode(b"ffffffffffffffff\r\nabc").map(|(b, ..)| b),
        Ok(b"abc".to_vec())
    );
}

#[test]
fn rejects_bad_line_ends_around_chunks() {
    assert_eq!(
        decode(b"5\nhello\r\n0\r\n\r\n"),
        Err(BodyError::BareLf {
            place: "chunk size line"
        })
    );
    assert_eq!(
        decode(b"5\r\nhello\n0\r\n\r\n"),
        Err(BodyError::MissingCrlfAfterData(b'\n'))
    );
    assert_eq!(
        decode(b"5\r\nhello\r0\r\n\r\n"),
        Err(BodyError::BareCr {
            place: "line after chunk data"
        })
    );
    assert_eq!(
        decode(b"5\r\nhelloX\r\n0\r\n\r\n"),
        Err(BodyError::MissingCrlfAfterData(b'X'))
    );
    assert_eq!(
        decode(b"5;ext=val\rue\r\nhello\r\n0\r\n\r\n"),
        Err(BodyError::BareCr {
            place: "chunk size line"
        })
    );
    assert_eq!(
        decode(b"5\r\nhello\r\n0\r\n\n"),
        Err(BodyError::BareLf {
            place: "trailer line"
        })
    );
}

#[test]
fn rejects_malformed_chunk_extensions() {
    for input in [
        &b"5;=x\r\n"[..],
        b"5;a=\r\n",
        b"5;a=b c\r\n",
        b"5;a=\"open\r\n",
        b"5;a=\"\x01\"\r\n",
        b"5;;\r\n",
    ] {
        assert!(
            matches!(decode(input), Err(BodyError::InvalidChunkExtension(_))),
            "{input:?}"
        );
    }
}

#[test]
fn caps_chunk_extension_bytes_across_the_body() {
    let limits = Limits {
        chunk_ext_bytes: 10,
        ..host_optional()
    };
    assert!(decode_with(&limits, b"1;aaaa\r\nx\r\n1;bbbb\r\ny\r\n0\r\n\r\n").is_ok());
    let error = decode_with(&limits, b"1;aaaa\r\nx\r\n1;bbbbbb\r\ny\r\n0\r\n\r\n").unwrap_err();
    assert_eq!(error, BodyError::ChunkExtensionsTooLong { limit: 10 });
}

#[test]
fn reads_trailer_fields() {
    let (body, _, trailers) =
        decode(b"5\r\nhello\r\n0\r\nVary: *\r\nContent-Type:  text/plain \r\n\r\n").unwrap();
    assert_eq!(body, b"hello");
    assert_eq!(
        trailers,
        vec![
            ("Vary".to_owned(), b"*".to_vec()),
            ("Content-Type".to_owned(), b"text/plain".to_vec())
        ]
    );
}

#[test]
fn rejects_trailer_fields_that_change_framing_or_routing() {
    for name in [
        "Content-Length",
        "transfer-encoding",
        "Host",
        "Trailer",
        "Connection",
        "TE",
        "Authorization",
    ] {
        let input = format!("0\r\n{name}: x\r\n\r\n");
        let error = decode(input.as_bytes()).unwrap_err();
        assert_eq!(error, BodyError::ForbiddenTrailer(name.to_owned()));
        assert_eq!(error.status(), 400);
    }
}

#[test]
fn rejects_trailer_lines_with_header_syntax_errors() {
    for input in [
        &b"0\r\nBad Name: x\r\n\r\n"[..],
        b"0\r\nX: a\x00\r\n\r\n",
        b"0\r\nNoColon\r\n\r\n",
        b"0\r\nX: a\rb\r\n\r\n",
    ] {
        assert!(
            matches!(
                decode(input),
                Err(BodyError::InvalidTrailer(_) | BodyError::BareCr { .. })
            ),
            "{input:?}"
        );
    }
    assert_eq!(
        decode(b"0\r\nX: a\r\n folded\r\n\r\n"),
        Err(BodyError::TrailerLineFolding)
    );
}

#[test]
fn caps_the_trailer_section_with_431() {
    let limits = Limits {
        trailer_bytes: 16,
        fields: 2,
        ..host_optional()
    };
    assert!(decode_with(&limits, b"0\r\nA: 1\r\nB: 2\r\n\r\n").is_ok());
    let error = decode_with(&limits, b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n").unwrap_err();
    assert_eq!(
        (error.status(), error),
        (431, BodyError::TrailerTooLarge { limit: 16 })
    );
    let limits = Limits {
        fields: 2,
        ..host_optional()
    };
    let error = decode_with(&limits, b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n").unwrap_err();
    assert_eq!(
        (error.status(), error),
        (431, BodyError::TooManyTrailerFields { limit: 2 })
    );
}

#[test]
fn keeps_returning_the_first_error() {
    let mut decoder = ChunkedDecoder::new(&Limits::default());
    let mut body = Vec::new();
    let error = decoder.decode(b"z", &mut body, 10).unwrap_err();
    assert_eq!(
        decoder.decode(b"5\r\nhello", &mut body, 10),
        Err(error.clone())
    );
    assert_eq!(decoder.decode(b"", &mut body, 10), Err(error));
}

// ---- responses ----

const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

fn head_text(
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    framing: ResponseFraming,
    keep_alive: bool,
) -> String {
    let mut out = Vec::new();
    write_head(
        &mut out, version, status, headers, framing, keep_alive, DATE,
    )
    .unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn writes_status_line_server_date_app_headers_then_framing() {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.append("x-many", HeaderValue::from_static("1"));
    headers.append("x-many", HeaderValue::from_static("2"));
    let text = head_text(
        Version::Http11,
        StatusCode::OK,
        &headers,
        ResponseFraming::Length(5),
        true,
    );
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nServer: forkhorn\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
         content-type: text/plain\r\nx-many: 1\r\nx-many: 2\r\nContent-Length: 5\r\n\r\n"
    );
}

#[test]
fn answers_http_1_0_clients_with_an_http_1_1_status_line() {
    let text = head_text(
        Version::Http10,
        StatusCode::NOT_FOUND,
        &HeaderMap::new(),
        ResponseFraming::Length(0),
        false,
    );
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
}

#[test]
fn replaces_the_apps_framing_headers_with_ours() {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
    headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    let text = head_text(
        Version::Http11,
        StatusCode::OK,
        &headers,
        ResponseFraming::Chunked,
        false,
    );
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nServer: forkhorn\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn lets_the_app_set_server_and_date() {
    let mut headers = HeaderMap::new();
    headers.insert(header::SERVER, HeaderValue::from_static("mine"));
    headers.insert(header::DATE, HeaderValue::from_static("yesterday"));
    let text = head_text(
        Version::Http11,
        StatusCode::OK,
        &headers,
        ResponseFraming::Length(0),
        true,
    );
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nserver: mine\r\ndate: yesterday\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn refuses_chunked_framing_for_http_1_0() {
    let mut out = b"earlier".to_vec();
    let result = write_head(
        &mut out,
        Version::Http10,
        StatusCode::OK,
        &HeaderMap::new(),
        ResponseFraming::Chunked,
        false,
        DATE,
    );
    assert_eq!(result, Err(ResponseError::ChunkedForHttp10));
    assert_eq!(out, b"earlier", "nothing written on error");
}

#[test]
fn writes_no_length_for_until_close() {
    let text = head_text(
        Version::Http10,
        StatusCode::OK,
        &HeaderMap::new(),
        ResponseFraming::UntilClose,
        false,
    );
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nServer: forkhorn\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn announces_keep_alive_only_to_http_1_0_clients() {
    let keep = |version| {
        head_text(
            version,
            StatusCode::OK,
            &HeaderMap::new(),
            ResponseFraming::Length(0),
            true,
        )
    };
    assert!(keep(Version::Http10).contains("\r\nConnection: keep-alive\r\n"));
    assert!(!keep(Version::Http11).contains("Connection"));
}

#[test]
fn writes_no_framing_for_1xx_204_and_304() {
    for status in [
        StatusCode::CONTINUE,
        StatusCode::NO_CONTENT,
        StatusCode::NOT_MODIFIED,
    ] {
        for framing in [ResponseFraming::Length(10), ResponseFraming::Chunked] {
            let text = head_text(Version::Http11, status, &HeaderMap::new(), framing, true);
            assert!(
                !text.contains("Content-Length") && !text.contains("Transfer-Encoding"),
                "{text}"
            );
        }
    }
    let interim = head_text(
        Version::Http11,
        StatusCode::CONTINUE,
        &HeaderMap::new(),
        ResponseFraming::Length(0),
        false,
    );
    assert!(
        !interim.contains("Connection"),
        "a 1xx is not the final response: {interim}"
    );
}

#[test]
fn refuses_cr_lf_and_nul_in_the_head() {
    // http::HeaderValue refuses these bytes (and panics on them in unchecked
    // debug builds), so the check is exercised directly and through `date`.
    for bad in [&b"a\rb"[..], b"a\nb", b"a\0b"] {
        assert!(has_forbidden_byte(bad));
    }
    assert!(!has_forbidden_byte(b"a\tb \xff"));
    let mut out = Vec::new();
    let result = write_head(
        &mut out,
        Version::Http11,
        StatusCode::OK,
        &HeaderMap::new(),
        ResponseFraming::Length(0),
        true,
        "today\r\nSet-Cookie: x=1",
    );
    assert_eq!(result, Err(ResponseError::InvalidDate));
    assert!(out.is_empty());
}

#[test]
fn writes_an_empty_reason_for_unknown_status_codes() {
    let status = StatusCode::from_u16(599).unwrap();
    let text = head_text(
        Version::Http11,
        status,
        &HeaderMap::new(),
        ResponseFraming::Length(0),
        true,
    );
    assert!(text.starts_with("HTTP/1.1 599 \r\n"), "{text}");
}

#[test]
fn formats_imf_fixdates() {
    let at = |secs| http_date(UNIX_EPOCH + Duration::from_secs(secs));
    assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(at(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 GMT");
    assert_eq!(at(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 GMT");
    assert_eq!(
        http_date(UNIX_EPOCH - Duration::from_secs(1)),
        "Thu, 01 Jan 1970 00:00:00 GMT"
    );
}

#[test]
fn writes_chunks_in_hex_and_skips_empty_ones() {
    let mut out = Vec::new();
    write_chunk(&mut out, b"");
    write_chunk(&mut out, &[b'x'; 26]);
    write_last_chunk(&mut out);
    let mut expected = b"1a\r\n".to_vec();
    expected.extend_from_slice(&[b'x'; 26]);
    expected.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(out, expected);
    assert_eq!(body_of(&out), [b'x'; 26]);
}

#[test]
fn builds_complete_error_responses() {
    let text = String::from_utf8(error_response(504, "worker timed out")).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 504 Gateway Timeout\r\nServer: forkhorn\r\nDate: "),
        "{head}"
    );
    assert!(
        head.ends_with(
            " GMT\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 17"
        ),
        "{head}"
    );
    assert_eq!(body, "worker timed out\n");
    let error = rejects(b"GET / HTTP/2.0\r\n\r\n");
    let response = error_response(error.status(), &error.to_string());
    assert!(response.starts_with(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"));
}
