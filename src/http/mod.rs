//! HTTP/1.1 framing, written without any knowledge of processes or sockets.
//!
//! Everything here is sans-IO: functions take bytes and return bytes or
//! decisions, so the worker owns every read and write (and its deadlines) and
//! the parser can be fuzzed on its own. `httparse` reads the head; the rules
//! RFC 9112 adds on top (framing, limits, smuggling defences) are ours,
//! because they are exactly where general-purpose crates have been weak.

pub mod body;
pub mod parse;
pub mod response;

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod tests;

pub use body::{BodyError, ChunkedDecoder};
pub use parse::{Framing, Limits, ParseError, RequestHead, Version, parse_head};
pub use response::{
    CONTINUE_100, ResponseError, ResponseFraming, error_response, http_date, write_chunk,
    write_head, write_last_chunk,
};
