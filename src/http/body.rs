//! Request body decoding: the chunked transfer coding (Content-Length needs no decoder).
//!
//! `ChunkedDecoder` is a byte-level state machine (RFC 9112 §7.1), so it gives
//! the same result however the input is split, keeps no buffered input, and
//! stops exactly after the trailer section's final CRLF: whatever follows
//! belongs to the next pipelined request.

use std::fmt;

use super::parse::{Limits, ParseError, shown, split_field_line};

/// Why a chunked body was rejected. The worker answers with
/// [`BodyError::status`] and closes: the rest of the stream cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// A byte other than a hex digit where the chunk size starts (a sign, `0x`, whitespace...).
    InvalidChunkSize(u8),
    /// The chunk size line is empty.
    EmptyChunkSize,
    /// More than `MAX_CHUNK_SIZE_DIGITS` hex digits.
    ChunkSizeTooLong,
    /// A byte the chunk-ext grammar does not allow there.
    InvalidChunkExtension(u8),
    /// Whitespace not followed by `;` (`5 \r\n`): RFC 9112 allows it only before an extension.
    WhitespaceBeforeLineEnd,
    /// The chunk extensions of this body exceed `limit` bytes in total.
    ChunkExtensionsTooLong {
        /// `Limits::chunk_ext_bytes` in force.
        limit: usize,
    },
    /// A line ends in LF without CR; `place` says which line.
    BareLf {
        /// The kind of line, e.g. `chunk size line`.
        place: &'static str,
    },
    /// A CR not followed by LF; `place` says which line.
    BareCr {
        /// The kind of line, e.g. `trailer line`.
        place: &'static str,
    },
    /// The byte after a chunk's data is not CR: the data is longer than its size said.
    MissingCrlfAfterData(u8),
    /// The trailer section exceeds `limit` bytes. 431.
    TrailerTooLarge {
        /// `Limits::trailer_bytes` in force.
        limit: usize,
    },
    /// More than `limit` trailer fields. 431.
    TooManyTrailerFields {
        /// The header field limit, `Limits::max_fields`, which trailers share.
        limit: usize,
    },
    /// A trailer line starting with SP or HTAB (obsolete line folding).
    TrailerLineFolding,
    /// A field that must not be sent as a trailer (RFC 9110 §6.5.1).
    ForbiddenTrailer(String),
    /// A trailer line with the same syntax error a header line would have.
    InvalidTrailer(ParseError),
}

impl BodyError {
    /// The status code to answer with: 431 for the trailer limits, else 400.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::TrailerTooLarge { .. } | BodyError::TooManyTrailerFields { .. } => 431,
            _ => 400,
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BodyError::*;
        match self {
            InvalidChunkSize(b) => write!(
                f,
                "chunk size starts with byte 0x{b:02x}; expected hex digits"
            ),
            EmptyChunkSize => write!(f, "chunk size line has no size"),
            ChunkSizeTooLong => write!(
                f,
                "chunk size has more than {MAX_CHUNK_SIZE_DIGITS} hex digits"
            ),
            InvalidChunkExtension(b) => write!(f, "invalid byte 0x{b:02x} in chunk size line"),
            WhitespaceBeforeLineEnd => write!(f, "chunk size line ends in whitespace"),
            ChunkExtensionsTooLong { limit } => write!(f, "chunk extensions exceed {limit} bytes"),
            BareLf { place } => write!(f, "{place} ends in a bare LF; lines must end in CRLF"),
            BareCr { place } => write!(f, "{place} has a CR not followed by LF"),
            MissingCrlfAfterData(b) => {
                write!(
                    f,
                    "chunk data is followed by byte 0x{b:02x}, not CRLF; the chunk is longer than its size"
                )
            }
            TrailerTooLarge { limit } => write!(f, "trailer section larger than {limit} bytes"),
            TooManyTrailerFields { limit } => write!(f, "more than {limit} trailer fields"),
            TrailerLineFolding => write!(
                f,
                "trailer line starts with whitespace; obsolete line folding is not accepted"
            ),
            ForbiddenTrailer(name) => write!(f, "field {name} is not allowed in a trailer section"),
            InvalidTrailer(e) => write!(f, "invalid trailer: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// 16 hex digits hold any u64, and no real chunk needs more.
pub const MAX_CHUNK_SIZE_DIGITS: u32 = 16;

/// Fields that change framing, routing, connection handling or authentication,
/// which a recipient must not take from a trailer (RFC 9110 §6.5.1).
const FORBIDDEN_TRAILERS: [&str; 12] = [
    "content-length",
    "transfer-encoding",
    "host",
    "trailer",
    "te",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "expect",
    "authorization",
    "proxy-authorization",
];

/// Where the decoder is in the chunked grammar. The chunk size line is
/// `size [ext] CRLF`, with `ext = *( BWS ";" BWS name [ BWS "=" BWS value ] )`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size {
        size: u64,
        digits: u32,
    },
    /// In the chunk size line after the digits.
    Ext {
        size: u64,
        at: Ext,
    },
    /// The size line's CR arrived; LF must follow.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    /// The chunk's data is complete; CR LF must follow.
    DataCr,
    DataLf,
    /// In a trailer line (at its start when `line` is empty).
    Trailer,
    TrailerLf,
    Done,
    Failed(BodyError),
}

/// Position inside the chunk extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// Whitespace after the size or a value: only more whitespace or `;` may follow.
    BwsBeforeSemicolon,
    /// After `;`: whitespace, then a name.
    BwsBeforeName,
    Name,
    /// Whitespace after a name: `=` or `;` must follow.
    BwsAfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    BwsBeforeValue,
    Token,
    Quoted,
    /// After a backslash inside a quoted string.
    QuotedPair,
    /// After the closing quote.
    AfterQuoted,
}

/// Incremental decoder for `Transfer-Encoding: chunked`.
///
/// ```
/// use forkhorn::http::{ChunkedDecoder, Limits};
///
/// let wire = b"5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\nGET /next HTTP/1.1\r\n";
/// let mut decoder = ChunkedDecoder::new(&Limits::default());
/// let mut body = Vec::new();
/// // Any split of the input gives the same result.
/// let first = decoder.decode(&wire[..7], &mut body, usize::MAX).unwrap();
/// let rest = decoder.decode(&wire[first..], &mut body, usize::MAX).unwrap();
/// assert!(decoder.is_done());
/// assert_eq!(body, b"hello");
/// assert_eq!(decoder.trailers(), &[("X-Sum".to_owned(), b"42".to_vec())]);
/// // It stops right after the body: the next pipelined request is untouched.
/// assert_eq!(&wire[first + rest..], b"GET /next HTTP/1.1\r\n");
/// ```
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Chunk-extension bytes seen in this body; refused past `ext_limit`.
    ext_bytes: usize,
    ext_limit: usize,
    /// Bytes of the trailer section so far; refused past `trailer_limit`.
    trailer_bytes: usize,
    trailer_limit: usize,
    max_trailer_fields: usize,
    /// The trailer line being read, CRLF excluded.
    line: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body, bounded by `limits`' chunk-extension
    /// and trailer limits (the trailer field count shares `max_fields`).
    pub fn new(limits: &Limits) -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            ext_bytes: 0,
            ext_limit: limits.chunk_ext_bytes,
            trailer_bytes: 0,
            trailer_limit: limits.trailer_bytes,
            max_trailer_fields: limits.max_fields(),
            line: Vec::new(),
            trailers: Vec::new(),
        }
    }

    /// Decode as much of `input` as possible, appending body bytes to `out`
    /// (at most `max_out` of them). Returns how many bytes of `input` were consumed.
    ///
    /// Consumes nothing once `is_done`, so the bytes after the body are left to
    /// the caller. After an error the same error is returned on every call.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> Result<usize, BodyError> {
        let mut at = 0;
        let mut room = max_out;
        while at < input.len() && !matches!(self.state, State::Done) {
            if let State::Data { remaining } = self.state {
                // The hot path: copy as much chunk data as fits, in one go.
                let available = input.len() - at;
                let n = usize::try_from(remaining)
                    .map_or(available, |r| r.min(available))
                    .min(room);
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&input[at..at + n]);
                at += n;
                room -= n;
                let remaining = remaining - n as u64;
                self.state = if remaining == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining }
                };
                continue;
            }
            let b = input[at];
            match self.step(b) {
                Ok(()) => at += 1,
                Err(e) => {
                    self.state = State::Failed(e.clone());
                    return Err(e);
                }
            }
        }
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            _ => Ok(at),
        }
    }

    /// The last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Trailer fields, once `is_done`.
    pub fn trailers(&self) -> &[(String, Vec<u8>)] {
        &self.trailers
    }

    /// Takes one framing byte (anything but chunk data).
    fn step(&mut self, b: u8) -> Result<(), BodyError> {
        const SIZE_LINE: &str = "chunk size line";
        self.state = match self.state.clone() {
            State::Size { size, digits } => match (b, hex_value(b)) {
                (_, Some(v)) if digits < MAX_CHUNK_SIZE_DIGITS => State::Size {
                    size: (size << 4) | v,
                    digits: digits + 1,
                },
                (_, Some(_)) => return Err(BodyError::ChunkSizeTooLong),
                (b'\r', None) if digits == 0 => return Err(BodyError::EmptyChunkSize),
                (b'\n', None) => return Err(BodyError::BareLf { place: SIZE_LINE }),
                (_, None) if digits == 0 => return Err(BodyError::InvalidChunkSize(b)),
                (b'\r', None) => State::SizeLf { size },
                (_, None) => State::Ext {
                    size,
                    at: self.extension(Ext::BwsBeforeSemicolon, b)?,
                },
            },
            State::Ext { size, at } => match b {
                b'\r' if matches!(at, Ext::Name | Ext::Token | Ext::AfterQuoted) => {
                    State::SizeLf { size }
                }
                b'\r' if matches!(at, Ext::BwsBeforeSemicolon | Ext::BwsAfterName) => {
                    return Err(BodyError::WhitespaceBeforeLineEnd);
                }
                b'\n' => return Err(BodyError::BareLf { place: SIZE_LINE }),
                _ => State::Ext {
                    size,
                    at: self.extension(at, b)?,
                },
            },
            State::SizeLf { size } => match b {
                b'\n' if size == 0 => State::Trailer,
                b'\n' => State::Data { remaining: size },
                _ => return Err(BodyError::BareCr { place: SIZE_LINE }),
            },
            // `decode` copies data itself; a data byte never gets here.
            State::Data { remaining } => State::Data { remaining },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(BodyError::MissingCrlfAfterData(b)),
            },
            State::DataLf => match b {
                b'\n' => State::Size { size: 0, digits: 0 },
                _ => {
                    return Err(BodyError::BareCr {
                        place: "line after chunk data",
                    });
                }
            },
            State::Trailer => {
                self.count_trailer_byte()?;
                match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => {
                        return Err(BodyError::BareLf {
                            place: "trailer line",
                        });
                    }
                    b' ' | b'\t' if self.line.is_empty() => {
                        return Err(BodyError::TrailerLineFolding);
                    }
                    _ => {
                        self.line.push(b);
                        State::Trailer
                    }
                }
            }
            State::TrailerLf => {
                self.count_trailer_byte()?;
                match b {
                    b'\n' if self.line.is_empty() => State::Done,
                    b'\n' => {
                        self.take_trailer_line()?;
                        State::Trailer
                    }
                    _ => {
                        return Err(BodyError::BareCr {
                            place: "trailer line",
                        });
                    }
                }
            }
            State::Done => State::Done,
            State::Failed(e) => return Err(e),
        };
        Ok(())
    }

    /// Advances the chunk-ext grammar by byte `b` (not CR or LF), counting it
    /// against the extension budget.
    fn extension(&mut self, at: Ext, b: u8) -> Result<Ext, BodyError> {
        self.ext_bytes += 1;
        if self.ext_bytes > self.ext_limit {
            return Err(BodyError::ChunkExtensionsTooLong {
                limit: self.ext_limit,
            });
        }
        let is_ws = b == b' ' || b == b'\t';
        let tchar = super::parse::is_tchar(b);
        let next = match at {
            Ext::BwsBeforeSemicolon if is_ws => Ext::BwsBeforeSemicolon,
            Ext::BwsBeforeSemicolon if b == b';' => Ext::BwsBeforeName,
            Ext::BwsBeforeName if is_ws => Ext::BwsBeforeName,
            Ext::BwsBeforeName | Ext::Name if tchar => Ext::Name,
            Ext::Name | Ext::BwsAfterName if b == b';' => Ext::BwsBeforeName,
            Ext::Name | Ext::BwsAfterName if is_ws => Ext::BwsAfterName,
            Ext::Name | Ext::BwsAfterName if b == b'=' => Ext::BwsBeforeValue,
            Ext::BwsBeforeValue if is_ws => Ext::BwsBeforeValue,
            Ext::BwsBeforeValue if b == b'"' => Ext::Quoted,
            Ext::BwsBeforeValue | Ext::Token if tchar => Ext::Token,
            Ext::Token | Ext::AfterQuoted if b == b';' => Ext::BwsBeforeName,
            Ext::Token | Ext::AfterQuoted if is_ws => Ext::BwsBeforeSemicolon,
            Ext::Quoted if b == b'"' => Ext::AfterQuoted,
            Ext::Quoted if b == b'\\' => Ext::QuotedPair,
            // qdtext: HTAB, SP, VCHAR except `"` and `\`, obs-text.
            Ext::Quoted if is_ws || (0x21..=0x7e).contains(&b) || b >= 0x80 => Ext::Quoted,
            Ext::QuotedPair if is_ws || (0x21..=0x7e).contains(&b) || b >= 0x80 => Ext::Quoted,
            _ => return Err(BodyError::InvalidChunkExtension(b)),
        };
        Ok(next)
    }

    fn count_trailer_byte(&mut self) -> Result<(), BodyError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.trailer_limit {
            return Err(BodyError::TrailerTooLarge {
                limit: self.trailer_limit,
            });
        }
        Ok(())
    }

    /// Checks the complete trailer line in `self.line` and keeps it.
    fn take_trailer_line(&mut self) -> Result<(), BodyError> {
        if self.trailers.len() == self.max_trailer_fields {
            return Err(BodyError::TooManyTrailerFields {
                limit: self.max_trailer_fields,
            });
        }
        let (name, value) =
            split_field_line(&self.line, true).map_err(BodyError::InvalidTrailer)?;
        if FORBIDDEN_TRAILERS
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
        {
            return Err(BodyError::ForbiddenTrailer(shown(name)));
        }
        // The name is all tchars, so it is ASCII.
        let field = (String::from_utf8_lossy(name).into_owned(), value.to_vec());
        self.trailers.push(field);
        self.line.clear();
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}
