//! `start_response(status, headers, exc_info=None)` and the `write()`
//! callable it returns, with PEP 3333's rules: a second call only with
//! `exc_info`, which is re-raised once the head has gone out; header names
//! and values checked before anything is sent.

use std::sync::Mutex;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

/// What the app said about its response so far.
#[derive(Default)]
pub(crate) struct Started {
    /// Status and headers from the last valid call.
    pub head: Option<(StatusCode, HeaderMap)>,
    /// The length the app declared, if any.
    pub content_length: Option<u64>,
    /// Bytes given to `write()`, sent before the iterable's.
    pub written: Vec<u8>,
    /// The head has been handed to the worker: `exc_info` now re-raises.
    pub is_sent: bool,
}

#[pyclass(frozen, module = "forkhorn")]
pub(crate) struct StartResponse {
    pub state: Mutex<Started>,
}

impl StartResponse {
    pub fn new() -> StartResponse {
        StartResponse {
            state: Mutex::new(Started::default()),
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Started) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        let me = slf.get();
        let (is_started, is_sent) = me.with(|s| (s.head.is_some(), s.is_sent));
        match exc_info {
            Some(info) if is_sent => {
                // The client has the head: the error cannot replace it.
                let value = info.cast::<PyTuple>()?.get_item(1)?;
                return Err(PyErr::from_value(value));
            }
            None if is_started => {
                return Err(PyAssertionError::new_err(
                    "start_response called a second time without exc_info (PEP 3333)",
                ));
            }
            _ => {}
        }
        let status: String = status
            .extract()
            .map_err(|_| PyTypeError::new_err("status must be a str such as '200 OK'"))?;
        let code = parse_status(&status).map_err(PyValueError::new_err)?;
        let mut map = HeaderMap::new();
        let mut content_length = None;
        for item in headers.try_iter()? {
            let item = item?;
            let (name, value): (String, String) = item.extract().map_err(|_| {
                PyTypeError::new_err("each header must be a (str, str) tuple (PEP 3333)")
            })?;
            let (name, value) = check_header(&name, &value).map_err(PyValueError::new_err)?;
            if name == http::header::CONTENT_LENGTH {
                content_length = Some(
                    value
                        .to_str()
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .ok_or_else(|| {
                            PyValueError::new_err(format!(
                                "Content-Length {value:?} is not a number of bytes"
                            ))
                        })?,
                );
            }
            map.append(name, value);
        }
        me.with(|s| {
            s.head = Some((code, map));
            s.content_length = content_length;
        });
        slf.getattr("write")
    }

    /// The legacy `write()` callable: its bytes come before the iterable's.
    fn write(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes (PEP 3333)"))?;
        self.with(|s| {
            if s.head.is_none() {
                return Err(PyAssertionError::new_err(
                    "write() called before start_response (PEP 3333)",
                ));
            }
            s.written.extend_from_slice(bytes.as_bytes());
            Ok(())
        })
    }
}

/// `"404 Not Found"` to 404; the reason phrase is the app's business.
fn parse_status(status: &str) -> Result<StatusCode, String> {
    let code = status.split(' ').next().unwrap_or("");
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "status {status:?} must start with a three-digit code, e.g. '200 OK'"
        ));
    }
    StatusCode::from_bytes(code.as_bytes())
        .ok()
        .filter(|c| c.as_u16() >= 100)
        .ok_or_else(|| format!("status {status:?} has no valid code"))
}

/// Fields only the server may send: PEP 3333 forbids apps hop-by-hop ones.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

/// A header the app gave, checked: a token name, a value with no CR, LF or
/// NUL, latin-1 text (PEP 3333), and not hop-by-hop.
fn check_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let header_name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("header name {name:?} is not a valid field name"))?;
    if HOP_BY_HOP.contains(&header_name.as_str()) {
        return Err(format!(
            "header {name:?} is hop-by-hop; a WSGI app must not set it (PEP 3333), forkhorn frames the response itself"
        ));
    }
    let bytes: Vec<u8> = value
        .chars()
        .map(|c| u8::try_from(u32::from(c)))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("header {name}: value {value:?} is not latin-1 (PEP 3333)"))?;
    let header_value = HeaderValue::from_bytes(&bytes)
        .map_err(|_| format!("header {name}: value {value:?} has CR, LF or NUL"))?;
    Ok((header_name, header_value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_need_a_three_digit_code() {
        assert_eq!(parse_status("200 OK").map(|s| s.as_u16()), Ok(200));
        assert_eq!(
            parse_status("418 I'm a teapot").map(|s| s.as_u16()),
            Ok(418)
        );
        assert_eq!(parse_status("599").map(|s| s.as_u16()), Ok(599));
        for bad in ["OK", "20 OK", "2000 OK", "", "abc def", "099 Low"] {
            assert!(parse_status(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_injection_and_hop_by_hop_fields_are_refused() {
        assert!(check_header("X-Ok", "fine").is_ok());
        assert!(check_header("Set-Cookie", "a=b; Path=/").is_ok());
        assert!(check_header("X-Bad", "a\r\nInjected: 1").is_err());
        assert!(check_header("X-Bad", "a\0b").is_err());
        assert!(check_header("X Bad", "v").is_err());
        assert!(check_header("Bad\r\n", "v").is_err());
        assert!(check_header("Connection", "close").is_err());
        assert!(check_header("Transfer-Encoding", "chunked").is_err());
        assert!(check_header("X-Snow", "\u{2603}").is_err());
        let (_, v) = check_header("X-Latin", "caf\u{e9}").expect("latin-1");
        assert_eq!(v.as_bytes(), b"caf\xe9");
    }
}
