//! The WSGI host: a Python app (`forkhorn module:app`) served by forkhorn's
//! workers, with the whole of PEP 3333.
//!
//! Each worker starts its own interpreter after fork and imports the app
//! (`interpreter`); the master never runs Python unless `--preload` asks
//! it to. A request becomes an environ (`environ`) with the body lent as
//! `wsgi.input` (`input`); the app's `start_response` call
//! (`start_response`) and its return value become the response (`body`),
//! streamed from a thread when it is a stream (`pump`). A timed-out worker
//! dumps its Python stacks into the log (`stuck`).
//!
//! The GIL is held only while Python code runs: socket reads and writes
//! happen without it, so threads the app started run meanwhile.

mod body;
mod environ;
mod input;
mod interpreter;
mod pump;
mod start_response;
mod stuck;

pub mod spec;

use std::path::PathBuf;
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyTuple};

use crate::app::{App, Progress, RawTarget, Request, Response, ResponseBody};
use environ::Environ;
use interpreter::Support;
use spec::PythonSpec;
use start_response::StartResponse;

/// How much of an unread request body is kept for a response iterable
/// that reads `wsgi.input` as it goes; past this, its reads raise.
const KEEP_REST_LIMIT: usize = 1 << 20;

/// The app `--preload` imported in the master; workers forked afterwards
/// find it here, already in their copy of the interpreter.
static PRELOADED: OnceLock<interpreter::Loaded> = OnceLock::new();

/// `--preload`: start Python in the master and import the app, so each
/// worker begins with it loaded (sharing its pages until written).
pub fn preload(spec: &str, pythonpath: &[PathBuf]) -> Result<(), String> {
    let parsed = PythonSpec::parse(spec)
        .ok_or_else(|| format!("{spec:?} is not a Python app spec (module:callable)"))?;
    let loaded = interpreter::load(&parsed, pythonpath)?;
    interpreter::prepare_for_fork(&parsed)?;
    let _ = PRELOADED.set(loaded);
    Ok(())
}

/// A WSGI app in this worker's interpreter.
pub struct PythonApp {
    app: Py<PyAny>,
    support: Support,
    /// Environ values that are the same for every request.
    constants: Py<PyDict>,
    /// `forkhorn.progress`, made at the first request (it needs the
    /// worker's heartbeat, which comes with the request).
    progress: Option<Py<PyAny>>,
    /// The mount point (`SCRIPT_NAME` in forkhorn's environment).
    script_name: String,
}

impl PythonApp {
    /// Start Python in this process, import the app and make it ready to
    /// serve. The error says what failed, with the Python traceback.
    /// `pythonpath` goes first on `sys.path` (`--pythonpath`).
    pub fn load(spec: &str, pythonpath: &[PathBuf]) -> Result<PythonApp, String> {
        let spec = PythonSpec::parse(spec)
            .ok_or_else(|| format!("{spec:?} is not a Python app spec (module:callable)"))?;
        let loaded = match PRELOADED.get() {
            Some(pre) => Python::attach(|py| pre.clone_ref(py)),
            None => interpreter::load(&spec, pythonpath)?,
        };
        stuck::report_on_timeout();
        let constants = Python::attach(|py| constants(py, &loaded.support))
            .map_err(|e| format!("cannot set up the WSGI environ: {e}"))?;
        Ok(PythonApp {
            app: loaded.app,
            support: loaded.support,
            constants,
            progress: None,
            script_name: std::env::var("SCRIPT_NAME").unwrap_or_default(),
        })
    }

    fn progress_callable(
        &mut self,
        py: Python<'_>,
        progress: Option<&Progress>,
    ) -> Option<Py<PyAny>> {
        if self.progress.is_none() {
            let progress = progress?.clone();
            let f = PyCFunction::new_closure(
                py,
                Some(c"progress"),
                Some(c"Tell forkhorn the request is still being worked on (resets --timeout)."),
                move |_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>| {
                    progress.beat();
                },
            )
            .ok()?;
            self.progress = Some(f.into_any().unbind());
        }
        self.progress.as_ref().map(|p| p.clone_ref(py))
    }
}

/// The `wsgi.*` values that never change.
fn constants(py: Python<'_>, support: &Support) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item("wsgi.version", (1, 0))?;
    d.set_item("wsgi.url_scheme", "http")?;
    d.set_item("wsgi.errors", support.error_stream.bind(py))?;
    d.set_item("wsgi.multithread", false)?;
    d.set_item("wsgi.multiprocess", true)?;
    d.set_item("wsgi.run_once", false)?;
    d.set_item("wsgi.input_terminated", true)?;
    d.set_item("wsgi.file_wrapper", support.file_wrapper.bind(py))?;
    Ok(d.unbind())
}

/// An exception and its traceback, as Python prints them.
pub(crate) fn describe_error(py: Python<'_>, err: &PyErr) -> String {
    // The support module is loaded with the app, before any request runs.
    py.import("_forkhorn_wsgi")
        .and_then(|m| m.getattr("format_exception"))
        .and_then(|f| f.call1((err.value(py), err.traceback(py))))
        .and_then(|s| s.extract::<String>())
        .unwrap_or_else(|_| err.to_string())
}

impl App for PythonApp {
    fn call(&mut self, req: Request<'_>) -> Response {
        let environ = Environ::of(&req, &self.script_name);
        let label = format!(
            "{} {}",
            req.method(),
            req.extensions()
                .get::<RawTarget>()
                .map_or_else(|| req.uri().to_string(), |t| t.0.clone())
        );
        let is_head = req.method() == http::Method::HEAD;
        let progress = req.extensions().get::<Progress>().cloned();
        let mut body = req.into_body();
        let loan = input::Loan::new(&mut body);
        let result = Python::attach(|py| {
            let progress = self.progress_callable(py, progress.as_ref());
            let environ = environ.fill(self.constants.bind(py).copy()?)?;
            let input = Bound::new(py, loan.input())?;
            environ.set_item("wsgi.input", &input)?;
            if let Some(p) = progress {
                environ.set_item("forkhorn.progress", p)?;
            }
            let start = Bound::new(py, StartResponse::new())?;
            let returned = self.app.bind(py).call1((&environ, &start))?;
            let ctx = body::Context {
                label: &label,
                is_head,
                support: &self.support,
            };
            let resp = body::response(py, returned, &start, &environ, &ctx)?;
            if !matches!(resp.body(), ResponseBody::Bytes(_) | ResponseBody::Empty) {
                // The iterable runs after this call returns, when the body's
                // loan has ended; what it may still read is kept.
                input.borrow_mut().keep_rest(py, KEEP_REST_LIMIT);
            }
            Ok(resp)
        });
        let body_failed = loan.has_failed();
        drop(loan);
        match result {
            Ok(resp) => resp,
            // The worker answers for the body's failure itself (400, 413,
            // or nothing to a client that left); the app only passed it on.
            Err(e) if body_failed => {
                log::debug!("{label}: the app raised after the request body failed: {e}");
                crate::app::respond(500, "text/plain", "Internal Server Error\n")
            }
            Err(e) => {
                let trace = Python::attach(|py| describe_error(py, &e));
                log::error!("Error handling request {label}:\n{trace}");
                crate::app::respond(500, "text/plain", "Internal Server Error\n")
            }
        }
    }
}
