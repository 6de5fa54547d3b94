//! `static:DIR`: files under DIR (stub: being written).

use crate::app::{App, Request, Response, respond};

pub fn check(dir: &str) -> Result<(), String> {
    if std::path::Path::new(dir).is_dir() {
        Ok(())
    } else {
        Err(format!("app static:{dir}: {dir} is not a directory"))
    }
}

pub struct StaticFiles {}

impl StaticFiles {
    pub fn new(dir: &str) -> Result<StaticFiles, String> {
        check(dir)?;
        Ok(StaticFiles {})
    }
}

impl App for StaticFiles {
    fn call(&mut self, _req: Request<'_>) -> Response {
        respond(501, "text/plain", "not yet\n")
    }
}
