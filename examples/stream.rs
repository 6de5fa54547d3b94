//! Server-Sent Events from a producer thread, as a detached stream: the
//! worker keeps serving other requests while each stream trickles out.
//!
//!     cargo run --example stream -- -b 127.0.0.1:8000 -w 2
//!     curl -N http://127.0.0.1:8000/events

use std::time::Duration;

use forkhorn::app::{Request, Response, ResponseBody, respond};

fn events(_req: Request<'_>) -> Response {
    let (tx, body) = ResponseBody::channel();
    std::thread::spawn(move || {
        for i in 1..=10 {
            // `send` fails once the client has gone away: stop then.
            if tx.send(format!("data: tick {i}\n\n")).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = tx.send("data: done\n\n");
    });
    let mut resp = respond(200, "text/event-stream", ());
    *resp.body_mut() = body;
    resp
}

fn main() -> std::process::ExitCode {
    forkhorn::run(|req: Request<'_>| -> Response {
        match req.uri().path() {
            "/events" => events(req),
            _ => respond(
                200,
                "text/html",
                "<p>Try <code>curl -N /events</code></p>\n",
            ),
        }
    })
}
