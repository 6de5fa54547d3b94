//! Starting CPython inside a worker (or, with `--preload`, the master) and
//! finding the app object in it.
//!
//! The interpreter is the one forkhorn was built against (its rpath names
//! it); what differs between machines is which packages it sees. An active
//! virtualenv (`VIRTUAL_ENV`) is honoured the way `python3` itself does it:
//! the interpreter is told its program is the venv's `bin/python3`, finds
//! `pyvenv.cfg` next to it, and puts the venv's site-packages on `sys.path`.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Once;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCFunction, PyDict, PyList, PyModule, PyTuple};

use super::spec::PythonSpec;

/// Python helpers the host hands to apps (`wsgi.file_wrapper`,
/// `wsgi.errors`) and the factory-call parser, kept in Python because that
/// is what they are made of.
const SUPPORT: &CStr = cr#"
import ast

class FileWrapper:
    """wsgi.file_wrapper: a file-like object returned as the response body.
    forkhorn sends a real file (one with fileno()) from its descriptor."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


class ErrorStream:
    """wsgi.errors: text written here goes to forkhorn's error log."""

    def __init__(self, write):
        self._write = write

    def write(self, s):
        self._write(s.encode("utf-8", "replace") if isinstance(s, str) else bytes(s))
        return len(s)

    def writelines(self, seq):
        for s in seq:
            self.write(s)

    def flush(self):
        pass


def call_factory(factory, args_src):
    """Call `factory` with the literal arguments of `module:factory(args)`,
    as gunicorn does; anything but literals is refused."""
    call = ast.parse("f(" + args_src + ")", mode="eval").body
    args = [ast.literal_eval(a) for a in call.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    return factory(*args, **kwargs)


def format_exception(e, tb):
    import traceback
    return "".join(traceback.format_exception(type(e), e, tb or e.__traceback__)).rstrip()
"#;

/// Where the Python pieces live once the interpreter runs.
pub(crate) struct Support {
    pub file_wrapper: Py<PyAny>,
    pub error_stream: Py<PyAny>,
    call_factory: Py<PyAny>,
}

impl Support {
    fn load(py: Python<'_>) -> PyResult<Support> {
        let m = PyModule::from_code(py, SUPPORT, c"<forkhorn>", c"_forkhorn_wsgi")?;
        // Through the logger, so a reopened log (USR1) is where it goes.
        let write = PyCFunction::new_closure(
            py,
            Some(c"write_error_log"),
            None,
            |args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>| -> PyResult<()> {
                let text = args.get_item(0)?;
                crate::logging::write_error_text(text.cast::<PyBytes>()?.as_bytes());
                Ok(())
            },
        )?;
        Ok(Support {
            file_wrapper: m.getattr("FileWrapper")?.unbind(),
            error_stream: m.getattr("ErrorStream")?.call1((write,))?.unbind(),
            call_factory: m.getattr("call_factory")?.unbind(),
        })
    }
}

/// The loaded app and what the host needs beside it.
pub(crate) struct Loaded {
    pub app: Py<PyAny>,
    pub support: Support,
}

impl Loaded {
    pub fn clone_ref(&self, py: Python<'_>) -> Loaded {
        Loaded {
            app: self.app.clone_ref(py),
            support: Support {
                file_wrapper: self.support.file_wrapper.clone_ref(py),
                error_stream: self.support.error_stream.clone_ref(py),
                call_factory: self.support.call_factory.clone_ref(py),
            },
        }
    }
}

/// Start the interpreter in this process (once) and leave the GIL free:
/// forkhorn's threads take it only to run Python code.
pub(crate) fn start() -> Result<(), String> {
    static START: Once = Once::new();
    let mut result = Ok(());
    START.call_once(|| result = start_once());
    result?;
    // SAFETY: Py_IsInitialized may be called at any time.
    if unsafe { ffi::Py_IsInitialized() } == 0 {
        return Err("the Python interpreter failed to start earlier in this process".into());
    }
    Ok(())
}

fn start_once() -> Result<(), String> {
    let program = program_name()?;
    // SAFETY: PyConfig is a plain C struct that PyConfig_InitPythonConfig
    // fills in completely before any other use; it is cleared below with
    // PyConfig_Clear, and no other thread runs Python yet (Once).
    unsafe {
        let mut config: ffi::PyConfig = std::mem::zeroed();
        ffi::PyConfig_InitPythonConfig(&mut config);
        // forkhorn owns the signals: its timeout and stop handlers must stay.
        config.install_signal_handlers = 0;
        // print() from an app reaches the log when it happens, not at exit.
        config.buffered_stdio = 0;
        let status = match &program {
            Some(p) => {
                ffi::PyConfig_SetBytesString(&mut config, &mut config.program_name, p.as_ptr())
            }
            None => ffi::PyStatus_Ok(),
        };
        let status = if ffi::PyStatus_Exception(status) == 0 {
            ffi::Py_InitializeFromConfig(&config)
        } else {
            status
        };
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            let why = if status.err_msg.is_null() {
                "unknown error".to_owned()
            } else {
                CStr::from_ptr(status.err_msg)
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(format!("cannot start the Python interpreter: {why}"));
        }
        // The thread that initialised Python holds the GIL; hand it back so
        // that `Python::attach` is the one way in, from any thread.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

/// The program name to start Python with: the venv's interpreter when one
/// is active, so its site-packages are on the path.
fn program_name() -> Result<Option<CString>, String> {
    let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let venv = PathBuf::from(venv);
    let python = venv.join("bin/python3");
    if !python.exists() {
        return Err(format!(
            "VIRTUAL_ENV is {} but it has no bin/python3 (is the virtualenv deleted? deactivate it or create it again)",
            venv.display()
        ));
    }
    check_venv_version(&venv)?;
    CString::new(python.as_os_str().as_encoded_bytes())
        .map(Some)
        .map_err(|_| format!("VIRTUAL_ENV {} contains a NUL byte", venv.display()))
}

/// A venv made by another Python version cannot be used: its packages are
/// built for that version.
fn check_venv_version(venv: &Path) -> Result<(), String> {
    let Ok(cfg) = std::fs::read_to_string(venv.join("pyvenv.cfg")) else {
        return Ok(());
    };
    let theirs = cfg.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        matches!(k.trim(), "version" | "version_info").then(|| v.trim().to_owned())
    });
    let ours = linked_version();
    match theirs {
        Some(v) if major_minor(&v) != major_minor(&ours) => Err(format!(
            "the virtualenv {} is for Python {v}, but forkhorn was built with Python {ours}; \
             create the venv with python{} or rebuild forkhorn with PYO3_PYTHON naming the venv's python",
            venv.display(),
            major_minor(&ours)
        )),
        _ => Ok(()),
    }
}

/// The version of the libpython this process runs, e.g. `3.11.7`.
pub(crate) fn linked_version() -> String {
    // SAFETY: Py_GetVersion may be called before initialisation and returns
    // a static NUL-terminated string.
    let full = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) }.to_string_lossy();
    full.split_whitespace().next().unwrap_or("").to_owned()
}

fn major_minor(v: &str) -> &str {
    let mut dots = v.match_indices('.');
    match (dots.next(), dots.next()) {
        (Some(_), Some((second, _))) => &v[..second],
        _ => v,
    }
}

/// Import the app: the current directory and `pythonpath` go first on
/// `sys.path` (as gunicorn does), then the module is imported, the
/// attribute looked up and, for `factory(...)`, called.
pub(crate) fn load(spec: &PythonSpec, pythonpath: &[PathBuf]) -> Result<Loaded, String> {
    start()?;
    Python::attach(|py| {
        let support = Support::load(py).map_err(|e| format!("cannot set up the WSGI host: {e}"))?;
        let failed = |e: PyErr| {
            format!(
                "cannot load Python app {spec}:\n{}",
                super::describe_error(py, &e)
            )
        };
        let app = import_app(py, spec, pythonpath, &support).map_err(failed)?;
        if !app.bind(py).is_callable() {
            return Err(format!(
                "Python app {spec} is not callable (it is a {}); name the WSGI callable, e.g. module:app",
                app.bind(py)
                    .get_type()
                    .name()
                    .map_or_else(|_| "?".to_owned(), |n| n.to_string())
            ));
        }
        Ok(Loaded { app, support })
    })
}

fn import_app(
    py: Python<'_>,
    spec: &PythonSpec,
    pythonpath: &[PathBuf],
    support: &Support,
) -> PyResult<Py<PyAny>> {
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    for dir in pythonpath.iter().rev().chain(std::iter::once(&cwd)) {
        let dir = dir.to_string_lossy();
        if !path.contains(&*dir)? {
            path.insert(0, &*dir)?;
        }
    }
    let mut obj = py.import(spec.module.as_str())?.into_any();
    for name in spec.attr.split('.') {
        obj = obj.getattr(name).map_err(|_| {
            pyo3::exceptions::PyAttributeError::new_err(format!(
                "module {:?} has no attribute {:?} (the app spec names module:attribute)",
                spec.module, spec.attr
            ))
        })?;
    }
    if let Some(args) = &spec.call_args {
        obj = support.call_factory.bind(py).call1((obj, args.as_str()))?;
    }
    Ok(obj.unbind())
}

/// Make this process (the master, after `--preload`) safe to fork with a
/// live interpreter: refuse if the import left threads running, move the
/// imported objects out of the garbage collector's reach so its passes do
/// not dirty the pages workers share, and have every fork run CPython's
/// own before/after-fork steps.
pub(crate) fn prepare_for_fork(spec: &PythonSpec) -> Result<(), String> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, Iterator::count);
    if threads > 1 {
        return Err(format!(
            "--preload: importing {spec} left {} thread(s) running in the master besides its own; \
             a thread alive at fork can hold a lock the workers then wait on forever. \
             Start threads when the first request comes (or in a post-fork hook), or drop --preload",
            threads - 1
        ));
    }
    Python::attach(|py| {
        let gc = py.import("gc")?;
        gc.call_method0("collect")?;
        gc.call_method0("freeze")?;
        PyResult::Ok(())
    })
    .map_err(|e| format!("--preload: cannot freeze the imported objects: {e}"))?;
    // SAFETY: the three handlers only call CPython's fork API, which is
    // meant for exactly these points; registration happens once, in the
    // single-threaded master.
    let rc = unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_parent),
            Some(after_fork_child),
        )
    };
    if rc != 0 {
        return Err(format!(
            "--preload: cannot register the fork handlers: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    Ok(())
}

/// Whether the GIL was already held when `before_fork` took it.
static HELD_BEFORE_FORK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn gil_state() -> ffi::PyGILState_STATE {
    if HELD_BEFORE_FORK.load(std::sync::atomic::Ordering::Relaxed) {
        ffi::PyGILState_STATE::PyGILState_LOCKED
    } else {
        ffi::PyGILState_STATE::PyGILState_UNLOCKED
    }
}

extern "C" fn before_fork() {
    // SAFETY: the interpreter is running (prepare_for_fork is called after
    // load); PyOS_BeforeFork needs the GIL, which Ensure takes.
    unsafe {
        let state = ffi::PyGILState_Ensure();
        HELD_BEFORE_FORK.store(
            matches!(state, ffi::PyGILState_STATE::PyGILState_LOCKED),
            std::sync::atomic::Ordering::Relaxed,
        );
        ffi::PyOS_BeforeFork();
    }
}

extern "C" fn after_fork_parent() {
    // SAFETY: pairs with before_fork in the same thread.
    unsafe {
        ffi::PyOS_AfterFork_Parent();
        ffi::PyGILState_Release(gil_state());
    }
}

extern "C" fn after_fork_child() {
    // SAFETY: pairs with before_fork; the child's only thread is the one
    // that forked, which holds the GIL CPython re-creates here.
    unsafe {
        ffi::PyOS_AfterFork_Child();
        ffi::PyGILState_Release(gil_state());
    }
}

#[cfg(test)]
mod tests {
    use super::major_minor;

    #[test]
    fn versions_compare_on_major_and_minor() {
        assert_eq!(major_minor("3.11.7"), "3.11");
        assert_eq!(major_minor("3.12"), "3.12");
        assert_eq!(major_minor("3.9.18+"), "3.9");
    }
}
