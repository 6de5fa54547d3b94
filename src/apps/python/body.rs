//! What a WSGI app returned, as the `ResponseBody` that frames it:
//!
//! - a list or tuple of byte strings: `Bytes`, sent with the head in one write;
//! - `wsgi.file_wrapper` around a real file: `Reader` over its descriptor;
//! - a stream (`text/event-stream`, or `environ["forkhorn.detach"]`): a
//!   detached `Channel` fed by a pump thread, so the worker serves on;
//! - any other iterable: `Reader` with the app's `Content-Length`, or
//!   `Stream` (chunked, each item written as it comes).
//!
//! The iterable's `close()` lives in `Closer`'s `Drop`, so it runs however
//! the response ends: at the end, on HEAD (nothing is sent), when the
//! client leaves, or when the worker drops an unsent body.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::interpreter::Support;
use super::start_response::StartResponse;
use crate::app::{ChunkSink, Response, ResponseBody};

/// Calls the iterable's `close()` when dropped (with the GIL, from any thread).
pub(crate) struct Closer {
    iterable: Option<Py<PyAny>>,
    /// For the log line if `close()` raises.
    label: String,
}

impl Drop for Closer {
    fn drop(&mut self) {
        let Some(iterable) = self.iterable.take() else {
            return;
        };
        Python::attach(|py| {
            let iterable = iterable.bind(py);
            if let Ok(close) = iterable.getattr("close")
                && let Err(e) = close.call0()
            {
                log::error!("close() of the response to {} raised: {e}", self.label);
            }
        });
    }
}

/// The parts of a request the body needs after the app returned.
pub(crate) struct Context<'a> {
    /// `METHOD target`, for log lines.
    pub label: &'a str,
    pub is_head: bool,
    pub support: &'a Support,
}

/// Turn the app's return value into the response.
pub(crate) fn response(
    py: Python<'_>,
    result: Bound<'_, PyAny>,
    start: &Bound<'_, StartResponse>,
    environ: &Bound<'_, PyDict>,
    ctx: &Context<'_>,
) -> PyResult<Response> {
    if result.is_instance_of::<PyList>() || result.is_instance_of::<PyTuple>() {
        let mut body = start.get().with(|s| std::mem::take(&mut s.written));
        for item in result.try_iter()? {
            body.extend_from_slice(bytes_of(&item?)?);
        }
        return finish(start, ResponseBody::Bytes(body));
    }
    let closer = Closer {
        iterable: Some(result.clone().unbind()),
        label: ctx.label.to_owned(),
    };
    if result.is_instance(ctx.support.file_wrapper.bind(py))?
        && let Some(file) = real_file(&result)
    {
        return finish_file(start, file, closer);
    }
    let iter = result.try_iter()?;
    // The app may call start_response only when its first item is asked for.
    let mut first = Vec::new();
    while start.get().with(|s| s.head.is_none()) {
        match iter.clone().next() {
            Some(item) => first.extend_from_slice(bytes_of(&item?)?),
            None => break,
        }
    }
    let (written, content_length, is_event_stream) = start.get().with(|s| {
        let written = std::mem::take(&mut s.written);
        let is_event_stream = s.head.as_ref().is_some_and(|(_, h)| {
            h.get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
        });
        (written, s.content_length, is_event_stream)
    });
    let mut pending = written;
    pending.extend_from_slice(&first);
    let wants_detach = is_event_stream
        || environ
            .get_item("forkhorn.detach")?
            .is_some_and(|v| v.is_truthy().unwrap_or(false));
    if !wants_detach
        && let Some(n) = content_length
        && n <= ONE_WRITE_LIMIT
        && let Some(whole) = take_whole(&iter, &mut pending, n)?
    {
        // `closer` drops here: close() runs once the app has produced it all.
        drop(closer);
        return finish(start, ResponseBody::Bytes(whole));
    }
    let items = Items {
        iter: iter.unbind(),
        pending,
        closer,
    };
    if wants_detach && !ctx.is_head {
        let (tx, body) = ResponseBody::channel();
        super::pump::start(items, tx);
        return finish(start, body);
    }
    let body = match content_length {
        Some(n) => ResponseBody::Reader {
            reader: Box::new(items.into_reader()),
            len: Some(n),
        },
        None => items.into_stream(),
    };
    finish(start, body)
}

/// The largest declared body `take_whole` gathers for one write with the head.
const ONE_WRITE_LIMIT: u64 = 64 * 1024;

/// A small body of declared length is nearly always one item (Flask's and
/// Django's responses are): take it now, while the GIL is held, so it goes
/// out with the head in one write. At most one item is taken beyond what
/// is pending, and one more `next()` confirms the end, so no block the app
/// produced waits for a later one (PEP 3333 forbids that delay). `None`
/// when the body turns out longer: what was taken stays in `pending`.
fn take_whole(
    iter: &Bound<'_, pyo3::types::PyIterator>,
    pending: &mut Vec<u8>,
    declared: u64,
) -> PyResult<Option<Vec<u8>>> {
    let mut iter = iter.clone();
    if pending.is_empty()
        && declared > 0
        && let Some(item) = iter.next()
    {
        pending.extend_from_slice(bytes_of(&item?)?);
    }
    if pending.len() as u64 != declared {
        return Ok(None);
    }
    match iter.next() {
        None => Ok(Some(std::mem::take(pending))),
        Some(item) => {
            pending.extend_from_slice(bytes_of(&item?)?);
            Ok(None)
        }
    }
}

/// The head from `start_response` with `body`; an app that never called it
/// is an error (PEP 3333).
fn finish(start: &Bound<'_, StartResponse>, body: ResponseBody) -> PyResult<Response> {
    start.get().with(|s| {
        let Some((status, headers)) = s.head.take() else {
            return Err(PyTypeError::new_err(
                "the app returned without calling start_response (PEP 3333)",
            ));
        };
        s.is_sent = true;
        let body = match (body, s.content_length) {
            // The app's Content-Length stands even when it lies: a longer
            // declaration cuts the connection, a shorter one cuts the body.
            (ResponseBody::Bytes(b), Some(n)) if n != b.len() as u64 => ResponseBody::Reader {
                reader: Box::new(io::Cursor::new(b)),
                len: Some(n),
            },
            (body, _) => body,
        };
        let mut resp = http::Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Ok(resp)
    })
}

fn bytes_of<'a>(item: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    item.cast::<PyBytes>().map(|b| b.as_bytes()).map_err(|_| {
        let kind = item
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        PyTypeError::new_err(format!(
            "the response iterable yielded a {kind}; WSGI bodies are bytes (encode str first)"
        ))
    })
}

/// The file under a `wsgi.file_wrapper`, as a descriptor of our own at the
/// file object's position, if it is a regular file.
fn real_file(wrapper: &Bound<'_, PyAny>) -> Option<File> {
    let filelike = wrapper.getattr("filelike").ok()?;
    let fd: i32 = filelike.call_method0("fileno").ok()?.extract().ok()?;
    let position: u64 = filelike.call_method0("tell").ok()?.extract().ok()?;
    // SAFETY: dup(2) of a descriptor the app's file object owns; the copy is
    // ours alone, so the app closing its file cannot pull it from under us.
    let own = unsafe { libc::dup(fd) };
    if own < 0 {
        return None;
    }
    // SAFETY: `own` was just returned by dup and nothing else owns it.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(own) });
    let is_regular = file.metadata().ok()?.is_file();
    file.seek(io::SeekFrom::Start(position)).ok()?;
    is_regular.then_some(file)
}

fn finish_file(
    start: &Bound<'_, StartResponse>,
    mut file: File,
    closer: Closer,
) -> PyResult<Response> {
    let left = file
        .metadata()
        .map(|m| m.len())
        .unwrap_or(0)
        .saturating_sub(file.stream_position().unwrap_or(0));
    let declared = start.get().with(|s| s.content_length);
    let len = declared.map_or(left, |n| n.min(left));
    let written = start.get().with(|s| std::mem::take(&mut s.written));
    let reader = FileBody {
        head: io::Cursor::new(written),
        file,
        _closer: closer,
    };
    let len = len + reader.head.get_ref().len() as u64;
    finish(
        start,
        ResponseBody::Reader {
            reader: Box::new(reader),
            len: Some(len),
        },
    )
}

struct FileBody {
    head: io::Cursor<Vec<u8>>,
    file: File,
    _closer: Closer,
}

impl Read for FileBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.head.read(buf)? {
            0 => self.file.read(buf),
            n => Ok(n),
        }
    }
}

/// An app's iterator with what was already taken from it.
pub(crate) struct Items {
    pub iter: Py<pyo3::types::PyIterator>,
    /// Bytes to send before asking the iterator for more.
    pub pending: Vec<u8>,
    pub closer: Closer,
}

impl Items {
    /// For log lines: `METHOD target`.
    pub fn label(&self) -> &str {
        &self.closer.label
    }

    /// The next item, taking the GIL for it; `None` at the end. An exception
    /// is logged here, with the request, and becomes an error: the client
    /// gets a cut-off body (the connection closes without its end).
    pub fn next_chunk(&self) -> io::Result<Option<Vec<u8>>> {
        Python::attach(|py| {
            let mut iter = self.iter.bind(py).clone();
            match iter.next() {
                None => Ok(None),
                Some(Ok(item)) => bytes_of(&item).map(|b| Some(b.to_vec())),
                Some(Err(e)) => Err(e),
            }
            .map_err(|e| {
                log::error!(
                    "Error in the response iterable of {} (the client gets a cut-off body):\n{}",
                    self.closer.label,
                    super::describe_error(py, &e)
                );
                io::Error::other("the app's response iterable raised")
            })
        })
    }

    fn into_reader(self) -> ItemsReader {
        ItemsReader { at: 0, items: self }
    }

    fn into_stream(mut self) -> ResponseBody {
        ResponseBody::stream(move |sink: &mut dyn ChunkSink| {
            let pending = std::mem::take(&mut self.pending);
            sink.send(&pending)?;
            while let Some(chunk) = self.next_chunk()? {
                sink.send(&chunk)?;
            }
            Ok(())
        })
    }
}

/// The iterator as a `Read`, for a body with a declared length: each item
/// is handed out as soon as it comes, so it reaches the client at once.
struct ItemsReader {
    items: Items,
    at: usize,
}

impl Read for ItemsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.items.pending.len() {
            match self.items.next_chunk()? {
                Some(chunk) => {
                    self.items.pending = chunk;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.items.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.items.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
