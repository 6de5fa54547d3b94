//! How a response's body is delimited on the wire, chosen from the request
//! and what the app gave: a pure function, so that every combination of
//! method, status, version and body can be checked without a socket.
//!
//! The rules (RFC 9112 §6): a response to HEAD, and a 1xx, 204 or 304
//! response, has no body. A body whose length is known up front gets a
//! `Content-Length`. One whose length is not known is chunked for an
//! HTTP/1.1 client; an HTTP/1.0 client cannot read chunks, so its body ends
//! where the connection does, and the connection cannot be kept.

use http::StatusCode;

use crate::app::ResponseBody;
use crate::http::{ResponseFraming, Version};

/// What the app gave as a body, as far as framing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// Known before the head is written: no body (0), bytes in memory, or a
    /// reader with a declared length.
    Known(u64),
    /// Known only when the producer ends: a reader without a length, a
    /// stream written by the app, or a detached stream.
    Unknown,
}

impl BodyLength {
    pub fn of(body: &ResponseBody) -> BodyLength {
        match body {
            ResponseBody::Empty => BodyLength::Known(0),
            ResponseBody::Bytes(b) => BodyLength::Known(b.len() as u64),
            ResponseBody::Reader { len: Some(n), .. } => BodyLength::Known(*n),
            ResponseBody::Reader { len: None, .. }
            | ResponseBody::Stream(_)
            | ResponseBody::Channel(_) => BodyLength::Unknown,
        }
    }
}

/// How a response goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// How the head delimits the body (`write_head` writes no framing field
    /// at all for 1xx, 204 and 304).
    pub framing: ResponseFraming,
    /// Whether the connection stays open after this response.
    pub keep_alive: bool,
    /// Whether body bytes follow the head.
    pub sends_body: bool,
}

/// Whether a response with this status never has a body.
pub fn is_bodiless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// The plan for one response. `may_keep_alive` says whether the connection
/// could stay open as far as everything but framing goes (the worker, the
/// client's request, the app's `Connection` header, an unread body).
///
/// CONNECT gets no special case: forkhorn does not tunnel, so an app's
/// answer to CONNECT is framed like any other response.
pub fn choose(
    method: &str,
    status: StatusCode,
    version: Version,
    body: BodyLength,
    may_keep_alive: bool,
) -> Plan {
    let is_head = method == "HEAD";
    let bodiless = is_bodiless(status);
    let sends_body = !is_head && !bodiless;
    let (framing, keep_alive) = match body {
        _ if bodiless => (ResponseFraming::Length(0), may_keep_alive),
        BodyLength::Known(n) => (ResponseFraming::Length(n), may_keep_alive),
        BodyLength::Unknown if version == Version::Http11 => {
            (ResponseFraming::Chunked, may_keep_alive)
        }
        // Only the close can end the body; a HEAD response has none to end.
        BodyLength::Unknown => (ResponseFraming::UntilClose, is_head && may_keep_alive),
    };
    Plan {
        framing,
        keep_alive,
        sends_body,
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::{BodyLength, Plan, choose};
    use crate::http::ResponseFraming::{Chunked, Length, UntilClose};
    use crate::http::Version::{Http10, Http11};

    const ALL_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT"];
    const ALL_STATUSES: &[u16] = &[100, 101, 103, 200, 201, 204, 206, 301, 304, 404, 500, 503];
    const ALL_BODIES: &[BodyLength] = &[
        BodyLength::Known(0),
        BodyLength::Known(11),
        BodyLength::Unknown,
    ];

    fn plan(method: &str, status: u16, v: crate::http::Version, body: BodyLength) -> Plan {
        choose(method, StatusCode::from_u16(status).unwrap(), v, body, true)
    }

    fn every_case(mut check: impl FnMut(&str, u16, crate::http::Version, BodyLength, bool, Plan)) {
        for &method in ALL_METHODS {
            for &status in ALL_STATUSES {
                for version in [Http10, Http11] {
                    for &body in ALL_BODIES {
                        for may_keep_alive in [false, true] {
                            let status_code = StatusCode::from_u16(status).unwrap();
                            let p = choose(method, status_code, version, body, may_keep_alive);
                            check(method, status, version, body, may_keep_alive, p);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn what_the_app_gave_has_a_known_length_only_when_it_says_so() {
        use crate::app::ResponseBody;
        let of = BodyLength::of;
        assert_eq!(of(&ResponseBody::Empty), BodyLength::Known(0));
        assert_eq!(of(&ResponseBody::from("hello")), BodyLength::Known(5));
        let reader = |len| ResponseBody::Reader {
            reader: Box::new(std::io::empty()),
            len,
        };
        assert_eq!(of(&reader(Some(7))), BodyLength::Known(7));
        assert_eq!(of(&reader(None)), BodyLength::Unknown);
        assert_eq!(of(&ResponseBody::stream(|_| Ok(()))), BodyLength::Unknown);
        assert_eq!(of(&ResponseBody::channel().1), BodyLength::Unknown);
    }

    #[test]
    fn a_known_length_is_a_content_length_on_both_versions() {
        for v in [Http10, Http11] {
            for method in ["GET", "POST", "CONNECT"] {
                let p = plan(method, 200, v, BodyLength::Known(11));
                assert_eq!(
                    p,
                    Plan {
                        framing: Length(11),
                        keep_alive: true,
                        sends_body: true
                    },
                    "{method} {v:?}"
                );
            }
        }
    }

    #[test]
    fn no_body_from_the_app_is_content_length_zero() {
        let p = plan("GET", 200, Http11, BodyLength::Known(0));
        assert_eq!(
            p,
            Plan {
                framing: Length(0),
                keep_alive: true,
                sends_body: true
            }
        );
    }

    #[test]
    fn an_unknown_length_is_chunked_for_http11_and_kept_alive() {
        for status in [200, 404, 500] {
            let p = plan("GET", status, Http11, BodyLength::Unknown);
            assert_eq!(
                p,
                Plan {
                    framing: Chunked,
                    keep_alive: true,
                    sends_body: true
                }
            );
        }
    }

    #[test]
    fn an_unknown_length_ends_at_close_for_http10_which_cannot_be_kept() {
        let p = plan("GET", 200, Http10, BodyLength::Unknown);
        assert_eq!(
            p,
            Plan {
                framing: UntilClose,
                keep_alive: false,
                sends_body: true
            }
        );
    }

    #[test]
    fn head_sends_no_body_but_the_length_the_get_would_have() {
        let p = plan("HEAD", 200, Http11, BodyLength::Known(11));
        assert_eq!(
            p,
            Plan {
                framing: Length(11),
                keep_alive: true,
                sends_body: false
            }
        );
        let p = plan("HEAD", 200, Http11, BodyLength::Unknown);
        assert_eq!(
            p,
            Plan {
                framing: Chunked,
                keep_alive: true,
                sends_body: false
            }
        );
    }

    #[test]
    fn head_over_http10_with_an_unknown_length_keeps_the_connection() {
        // No body follows, so no close is needed to end one.
        let p = plan("HEAD", 200, Http10, BodyLength::Unknown);
        assert_eq!(
            p,
            Plan {
                framing: UntilClose,
                keep_alive: true,
                sends_body: false
            }
        );
    }

    #[test]
    fn statuses_1xx_204_304_send_no_body_whatever_the_app_gave() {
        for status in [100, 101, 103, 204, 304] {
            for v in [Http10, Http11] {
                for &body in ALL_BODIES {
                    for method in ["GET", "HEAD", "POST", "CONNECT"] {
                        let p = plan(method, status, v, body);
                        assert_eq!(
                            p,
                            Plan {
                                framing: Length(0),
                                keep_alive: true,
                                sends_body: false
                            },
                            "{method} {status} {v:?} {body:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn connect_is_framed_like_any_other_method() {
        for &status in ALL_STATUSES {
            for v in [Http10, Http11] {
                for &body in ALL_BODIES {
                    assert_eq!(
                        plan("CONNECT", status, v, body),
                        plan("GET", status, v, body)
                    );
                }
            }
        }
    }

    #[test]
    fn a_connection_that_must_close_is_never_kept() {
        every_case(|method, status, v, body, may_keep_alive, p| {
            if !may_keep_alive {
                assert!(!p.keep_alive, "{method} {status} {v:?} {body:?}");
            }
        });
    }

    #[test]
    fn http10_never_gets_chunks() {
        every_case(|method, status, v, body, _, p| {
            if v == Http10 {
                assert_ne!(p.framing, Chunked, "{method} {status} {body:?}");
            }
        });
    }

    #[test]
    fn a_body_that_ends_at_close_is_never_followed_by_another_response() {
        every_case(|method, status, v, body, _, p| {
            if p.sends_body && p.framing == UntilClose {
                assert!(!p.keep_alive, "{method} {status} {v:?} {body:?}");
            }
        });
    }

    #[test]
    fn only_head_and_bodiless_statuses_skip_the_body() {
        every_case(|method, status, v, body, _, p| {
            let expected = method != "HEAD" && ![100, 101, 103, 204, 304].contains(&status);
            assert_eq!(p.sends_body, expected, "{method} {status} {v:?} {body:?}");
        });
    }
}
