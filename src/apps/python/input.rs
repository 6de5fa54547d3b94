//! `wsgi.input`: the request body, read from the client's socket as the app
//! asks for it (never gathered in memory first).
//!
//! The body borrows the worker's connection for the length of the app's
//! call, but a Python object lives as long as Python keeps it. So the body
//! is lent: `Loan` points the input at it, and takes it back when the call
//! returns or unwinds; a read after that raises `ValueError`. Reads go
//! through the worker's `Body`, so `--limit-request-body`, `100 Continue`
//! and the heartbeat during uploads work as for any app.

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::app::Body;

/// The body lent to Python for one call: a raw pointer, because the body's
/// lifetime cannot be named in a Python object.
#[derive(Default)]
struct Shared {
    body: Cell<Option<*mut Body<'static>>>,
    /// A read failed: the client went away or broke the framing mid-body.
    has_failed: Cell<bool>,
}

type Lent = Rc<Shared>;

/// Lends `body` to an `Input` until dropped.
pub(crate) struct Loan<'b> {
    lent: Lent,
    _body: std::marker::PhantomData<&'b mut ()>,
}

impl<'b> Loan<'b> {
    pub fn new(body: &'b mut Body<'_>) -> Loan<'b> {
        let ptr: *mut Body<'_> = body;
        // SAFETY: only the lifetime is erased. The pointer is used only while
        // the loan holds it, and `Drop` takes it back before `'b` ends, so it
        // never outlives the exclusive borrow it came from.
        let ptr: *mut Body<'static> = unsafe { std::mem::transmute(ptr) };
        let lent = Lent::default();
        lent.body.set(Some(ptr));
        Loan {
            lent,
            _body: std::marker::PhantomData,
        }
    }

    /// A fresh `wsgi.input` reading this loan.
    pub fn input(&self) -> Input {
        Input {
            lent: self.lent.clone(),
            pending: Vec::new(),
            at: 0,
            is_eof: false,
        }
    }
}

impl Loan<'_> {
    /// Whether reading the body failed (the client went away mid-upload):
    /// an exception the app raised then is the client's doing, not a bug.
    pub fn has_failed(&self) -> bool {
        self.lent.has_failed.get()
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        self.lent.body.set(None);
    }
}

/// The body, readable with the GIL released: the pointer is used by the
/// thread that holds the loan (the worker's), only for the one read.
struct Reading(*mut Body<'static>);

// SAFETY: `Python::detach` runs the closure on the calling thread; this only
// lets the pointer through its `Send` bound while that thread waits.
unsafe impl Send for Reading {}

impl Reading {
    fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: the loan was checked a moment ago on this thread, and the
        // loan cannot end while this call runs (it ends on the same thread).
        unsafe { (*self.0).read(buf) }
    }
}

/// How much is read from the socket at once when a line or the rest is asked for.
const READ_SIZE: usize = 16 * 1024;

#[pyclass(unsendable, module = "forkhorn")]
pub(crate) struct Input {
    lent: Lent,
    /// Read from the socket but not yet given to the app (readline reads ahead).
    pending: Vec<u8>,
    at: usize,
    is_eof: bool,
}

impl Input {
    /// Read up to `want` more bytes into `pending`; false at the end.
    fn fill(&mut self, py: Python<'_>, want: usize) -> PyResult<bool> {
        if self.is_eof {
            return Ok(false);
        }
        let Some(ptr) = self.lent.body.get() else {
            return Err(PyValueError::new_err(
                "wsgi.input read while the response is sent, past the first MiB of body forkhorn keeps for that: read a large body before returning the response",
            ));
        };
        if self.at > 0 {
            self.pending.drain(..self.at);
            self.at = 0;
        }
        let start = self.pending.len();
        self.pending.resize(start + want.max(1), 0);
        let reading = Reading(ptr);
        let mut buf = std::mem::take(&mut self.pending);
        let got = py.detach(move || {
            loop {
                match reading.read(&mut buf[start..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other.map(|n| (n, buf)),
                }
            }
        });
        match got {
            Ok((n, mut buf)) => {
                buf.truncate(start + n);
                self.pending = buf;
                self.is_eof = n == 0;
                Ok(n > 0)
            }
            Err(e) => {
                self.is_eof = true;
                self.lent.has_failed.set(true);
                Err(PyOSError::new_err(format!("reading the request body: {e}")))
            }
        }
    }

    /// Read what is left of the body into memory, up to `limit` bytes, so
    /// a response iterable that reads `wsgi.input` while it is being sent
    /// (after the loan ends) still can. Called only for such responses.
    pub fn keep_rest(&mut self, py: Python<'_>, limit: usize) {
        while !self.is_eof && self.buffered().len() < limit {
            if !matches!(self.fill(py, READ_SIZE), Ok(true)) {
                break;
            }
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.pending[self.at..]
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.buffered().len());
        let out = self.pending[self.at..self.at + n].to_vec();
        self.at += n;
        out
    }

    /// Bytes up to and including the next newline, at most `limit`.
    fn line(&mut self, py: Python<'_>, limit: Option<usize>) -> PyResult<Vec<u8>> {
        let mut searched = 0;
        loop {
            let buffered = self.buffered();
            let cap = limit.map_or(buffered.len(), |l| l.min(buffered.len()));
            if let Some(i) = buffered[searched..cap].iter().position(|&b| b == b'\n') {
                return Ok(self.take(searched + i + 1));
            }
            if limit.is_some_and(|l| buffered.len() >= l) {
                return Ok(self.take(cap));
            }
            searched = cap;
            if !self.fill(py, READ_SIZE)? {
                let n = self.buffered().len();
                return Ok(self.take(n));
            }
        }
    }
}

/// A negative or missing size means "all".
fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    /// `read(size=-1)`: up to `size` bytes (fewer only at the end), or all
    /// that is left; `b""` at the end.
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let want = size_arg(size);
        loop {
            let have = self.buffered().len();
            if want.is_some_and(|w| have >= w) {
                break;
            }
            let more = want.map_or(READ_SIZE, |w| (w - have).max(1));
            if !self.fill(py, more)? {
                break;
            }
        }
        let n = want.unwrap_or(usize::MAX);
        Ok(PyBytes::new(py, &self.take(n)))
    }

    /// `readline(size=-1)`: one line, newline included, at most `size` bytes.
    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let line = self.line(py, size_arg(size))?;
        Ok(PyBytes::new(py, &line))
    }

    /// `readlines(hint=-1)`: the remaining lines (stopping once `hint` bytes
    /// have been read, when given).
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = size_arg(hint).filter(|&h| h > 0);
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = self.line(py, None)?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.push(PyBytes::new(py, &line));
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.line(py, None)?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }
}
