//! With the `python` feature, the binary remembers where the libpython it
//! was built against lives (an rpath), so a Python outside the loader's
//! default paths (pyenv, a /opt build) is the one that runs, not some other
//! 3.x the system happens to have.

fn main() {
    #[cfg(feature = "python")]
    pyo3_build_config::add_libpython_rpath_link_args();
}
