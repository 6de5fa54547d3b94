//! `chat`: a chat web UI streaming replies over Server-Sent Events (stub: being written).

use crate::app::{App, Request, Response, respond};

pub fn check(_option: Option<&str>) -> Result<(), String> {
    Ok(())
}

pub struct Chat {}

impl Chat {
    pub fn new(_option: Option<&str>) -> Result<Chat, String> {
        Ok(Chat {})
    }
}

impl App for Chat {
    fn call(&mut self, _req: Request<'_>) -> Response {
        respond(501, "text/plain", "not yet\n")
    }
}
