//! A Server-Sent Events client: a response read one event at a time as it
//! arrives, over a chunked or a read-to-close body, as a browser's
//! EventSource reads it. What an event's `data:` means is the app's own, so
//! each test binary passes the parser for its app's events.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use super::{Client, bad, request};

/// How long a stream may go on before reading it is an error: no test's
/// stream is designed to take more than about 15 s, so one still going after
/// this fails its test rather than hangs it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// `POST path` with the JSON `body` and `Connection: close`, as bytes.
pub fn json_post(path: &str, body: &[u8]) -> Vec<u8> {
    request(
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", &body.len().to_string()),
            ("Connection", "close"),
        ],
        body,
    )
}

/// A response read event by event as it arrives; `E` is what `parse`
/// makes of one event's text.
pub struct EventStream<E> {
    reader: BufReader<TcpStream>,
    /// The response's status code.
    pub status: u16,
    /// The response's headers in the order they came, names lowercased.
    pub headers: Vec<(String, String)>,
    is_chunked: bool,
    /// Body text received but not yet split into events.
    pending: String,
    is_ended: bool,
    /// Turns one event's text (its lines, without the blank line ending it)
    /// into an `E`.
    parse: fn(&str) -> io::Result<E>,
}

impl<E: fmt::Debug> EventStream<E> {
    /// Send `raw` (a whole request) on a new connection to `port` and read
    /// the response head; the body is left to `next_event`.
    pub fn open(port: u16, raw: &[u8], parse: fn(&str) -> io::Result<E>) -> io::Result<Self> {
        let mut client = Client::connect(port)?;
        client.send(raw)?;
        let mut stream = EventStream {
            reader: BufReader::new(client.try_clone_stream()?),
            status: 0,
            headers: Vec::new(),
            is_chunked: false,
            pending: String::new(),
            is_ended: false,
            parse,
        };
        let status_line = stream.line()?;
        stream.status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        loop {
            let line = stream.line()?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header {line:?}")))?;
            stream
                .headers
                .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        stream.is_chunked = stream
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        Ok(stream)
    }

    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// The next event, or None once the response has ended. A response
    /// that ends inside an event is an error.
    pub fn next_event(&mut self) -> io::Result<Option<E>> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                return (self.parse)(block.trim_end()).map(Some);
            }
            if self.is_ended {
                if self.pending.trim().is_empty() {
                    return Ok(None);
                }
                return Err(bad(format!(
                    "the stream ended mid-event: {:?}",
                    self.pending
                )));
            }
            self.read_more()?;
        }
    }

    /// Move the next piece of the body (a chunk, or what one read gives)
    /// into `pending`.
    fn read_more(&mut self) -> io::Result<()> {
        let mut data = Vec::new();
        if self.is_chunked {
            let size_line = self.line()?;
            let size =
                usize::from_str_radix(size_line.split(';').next().unwrap_or_default().trim(), 16)
                    .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                while !self.line()?.is_empty() {}
                self.is_ended = true;
                return Ok(());
            }
            data.resize(size, 0);
            self.reader.read_exact(&mut data)?;
            self.line()?;
        } else {
            let mut buf = [0u8; 4096];
            let n = self.reader.read(&mut buf)?;
            if n == 0 {
                self.is_ended = true;
            }
            data.extend_from_slice(&buf[..n]);
        }
        self.pending
            .push_str(&String::from_utf8(data).map_err(|_| bad("non-UTF-8 body".to_owned()))?);
        Ok(())
    }

    /// Every event to the end of the response, each with when it arrived;
    /// a stream still going after `GIVE_UP_AFTER` is an error.
    pub fn read_to_end(&mut self) -> io::Result<Vec<(Instant, E)>> {
        let give_up = Instant::now() + GIVE_UP_AFTER;
        let mut events = Vec::new();
        while let Some(event) = self.next_event()? {
            events.push((Instant::now(), event));
            if Instant::now() > give_up {
                return Err(bad(format!(
                    "the stream did not end within {GIVE_UP_AFTER:?}; its last events: {:?}",
                    events[events.len().saturating_sub(3)..]
                        .iter()
                        .map(|(_, e)| e)
                        .collect::<Vec<_>>()
                )));
            }
        }
        Ok(events)
    }

    /// Hang up at once (a closed tab).
    pub fn hang_up(self) {
        let _ = self.reader.get_ref().shutdown(Shutdown::Both);
    }
}
