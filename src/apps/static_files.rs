//! `static:DIR`: the files under DIR, with the HTTP caching and range
//! machinery a browser or a download tool expects (RFC 9110 §8.8, §13, §14).
//!
//! A request goes: method (GET and HEAD only) -> the URL path split into
//! segments, each percent-decoded and checked, dot names refused -> the file
//! opened beneath DIR's directory fd (`sys::openat2`: one `openat2` with
//! `RESOLVE_BENEATH`, so no symlink or rename can lead the open outside DIR
//! between a check and the open; there is no separate check) -> its
//! validators (ETag, Last-Modified) from the open file -> preconditions (412,
//! 304) -> Range (206, 416) -> the file as a `Reader` body, never read into
//! memory here.
//!
//! Relative symlinks inside DIR are followed while they stay inside DIR;
//! absolute ones are refused, even when they name a file inside DIR (on
//! kernels without `openat2`, no symlink is followed). Names starting with `.` (`.git`,
//! `.env`, `.htpasswd`) are refused unless `--static-dotfiles`; a symlink
//! with a plain name pointing at one is the operator's choice and is served.
//!
//! Everything that is refused or missing is a 404, whatever the reason, so a
//! client cannot tell "outside DIR" or "unreadable" from "absent". The
//! reason goes to the debug log.

use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use nix::fcntl::OFlag;

use crate::app::{App, Request, Response, ResponseBody, respond};
use crate::http::http_date;
use crate::sys::openat2::Beneath;

/// The file served for a directory whose URL ends in `/`.
const INDEX_FILE: &str = "index.html";

/// Content types by lower-case extension; anything else is
/// `application/octet-stream`. `text/*` types are UTF-8.
const CONTENT_TYPES: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("txt", "text/plain; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("xml", "text/xml; charset=utf-8"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("ico", "image/x-icon"),
    ("wasm", "application/wasm"),
    ("pdf", "application/pdf"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("wav", "audio/wav"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
];

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// How every file is opened: read-only; O_NONBLOCK so that a FIFO put in DIR
/// returns at once instead of waiting for a writer (reads of a regular file
/// ignore it); O_NOCTTY so a terminal device never becomes ours.
fn open_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY
}

/// Checked by the master before forking: DIR must be a directory.
pub fn check(dir: &str) -> Result<(), String> {
    if Path::new(dir).is_dir() {
        Ok(())
    } else {
        Err(format!("app static:{dir}: {dir} is not a directory"))
    }
}

/// The app: one per worker, built after fork.
pub struct StaticFiles {
    /// DIR, opened once here; every file is opened beneath it, and it keeps
    /// naming the same directory even if DIR is renamed later.
    root: Beneath,
    /// Whether names starting with `.` are served (`--static-dotfiles`).
    serves_dotfiles: bool,
}

impl StaticFiles {
    /// The app serving `dir`, which must be a directory; it is opened now, in
    /// the worker, and is the fence for every request.
    pub fn new(dir: &str, serves_dotfiles: bool) -> Result<StaticFiles, String> {
        check(dir)?;
        let root = Beneath::open(Path::new(dir))
            .map_err(|e| format!("app static:{dir}: cannot open {dir}: {}", e.desc()))?;
        log::debug!(
            "static: serving {dir}, resolving paths with {:?}",
            root.resolver()
        );
        Ok(StaticFiles {
            root,
            serves_dotfiles,
        })
    }
}

impl App for StaticFiles {
    fn call(&mut self, req: Request<'_>) -> Response {
        let method = req.method();
        if method != Method::GET && method != Method::HEAD {
            let mut resp = respond(405, "text/plain; charset=utf-8", "method not allowed\n");
            set_header(&mut resp, header::ALLOW, "GET, HEAD".to_owned());
            return resp;
        }
        let path = req.uri().path();
        match self.lookup(path, req.uri().query()) {
            Lookup::File(found) => serve_file(found, method, req.headers(), path),
            Lookup::AddSlash(location) => {
                let mut resp = respond(301, "text/plain; charset=utf-8", "moved permanently\n");
                set_header(&mut resp, header::LOCATION, location);
                resp
            }
            Lookup::NotFound(why) => {
                log::debug!("static: 404 for {path}: {why}");
                not_found()
            }
        }
    }
}

// ---------------------------------------------------------------- where a URL path leads

/// What a URL path names under the root.
#[derive(Debug)]
enum Lookup {
    /// A regular file inside the root, already open.
    File(Found),
    /// A directory asked for without its trailing slash: redirect here.
    AddSlash(String),
    /// Nothing to serve; the reason is for the debug log only.
    NotFound(String),
}

/// An open regular file and what was learnt from it.
#[derive(Debug)]
struct Found {
    file: File,
    meta: Metadata,
    /// Its path under the root, `/`-separated (for the content type and logs).
    name: String,
}

/// One URL path segment: as sent (for redirects) and decoded (for the file system).
#[derive(Debug, PartialEq, Eq)]
struct Segment {
    raw: String,
    name: String,
}

impl StaticFiles {
    fn lookup(&self, url_path: &str, query: Option<&str>) -> Lookup {
        let segments = match url_segments(url_path) {
            Ok(segments) => segments,
            Err(why) => return Lookup::NotFound(why),
        };
        if !self.serves_dotfiles
            && let Some(dot) = segments.iter().find(|s| s.name.starts_with('.'))
        {
            return Lookup::NotFound(format!(
                "{:?} starts with a dot (--static-dotfiles serves such names)",
                dot.name
            ));
        }
        let mut names: Vec<&str> = segments.iter().map(|s| s.name.as_str()).collect();
        let (file, meta) = match self.open(&names) {
            Ok(opened) => opened,
            Err(why) => return Lookup::NotFound(why),
        };
        let has_slash = url_path.ends_with('/');
        if meta.is_dir() && !has_slash {
            let mut location = String::from("/");
            for segment in &segments {
                location.push_str(&segment.raw);
                location.push('/');
            }
            if let Some(query) = query {
                location.push('?');
                location.push_str(query);
            }
            return Lookup::AddSlash(location);
        }
        let (file, meta) = if meta.is_dir() {
            // Opened from the root again, not from the directory's fd, so an
            // index.html symlink may point anywhere inside the root.
            names.push(INDEX_FILE);
            match self.open(&names) {
                Ok(opened) => opened,
                Err(why) => {
                    return Lookup::NotFound(format!("directory without {INDEX_FILE}: {why}"));
                }
            }
        } else if has_slash {
            // `/file.txt/` names a directory that is not there.
            return Lookup::NotFound("a file asked for as a directory".to_owned());
        } else {
            (file, meta)
        };
        if !meta.is_file() {
            return Lookup::NotFound("not a regular file".to_owned());
        }
        Lookup::File(Found {
            file,
            meta,
            name: names.join("/"),
        })
    }

    /// `names` opened beneath the root, with its metadata from the open file.
    fn open(&self, names: &[&str]) -> Result<(File, Metadata), String> {
        let fd = self
            .root
            .open_file(names, open_flags())
            .map_err(|e| format!("open {:?} beneath the root: {}", names.join("/"), e.desc()))?;
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| format!("stat {:?}: {e}", names.join("/")))?;
        Ok((file, meta))
    }
}

/// The segments of an origin-form path, each percent-decoded, with empty and
/// `.` segments dropped. Refused, with the reason: a path not starting with
/// `/`, bad escapes or non-UTF-8, and any segment that could step outside
/// the directory it is looked up in: `..`, a `/` or `\` inside a segment
/// (`%2f`, `%5c`), NUL, or an escape left over after decoding (`%252e`), so
/// that no later decoding anywhere can turn it into one of the others.
fn url_segments(url_path: &str) -> Result<Vec<Segment>, String> {
    let Some(rest) = url_path.strip_prefix('/') else {
        return Err("the path does not start with /".to_owned());
    };
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        let name = percent_decode(raw).ok_or_else(|| format!("bad escape in {raw:?}"))?;
        let name = String::from_utf8(name).map_err(|_| format!("{raw:?} is not UTF-8"))?;
        match name.as_str() {
            "" | "." => continue,
            ".." => return Err("a .. segment".to_owned()),
            _ if name.contains(['/', '\\', '\0']) => {
                return Err(format!("{raw:?} holds a slash, backslash or NUL"));
            }
            _ if percent_decode(&name).is_some_and(|again| again != name.as_bytes()) => {
                return Err(format!("{raw:?} is encoded twice"));
            }
            _ => segments.push(Segment {
                raw: raw.to_owned(),
                name,
            }),
        }
    }
    Ok(segments)
}

/// `s` with every `%XX` replaced by its byte; None for a `%` not followed by
/// two hex digits.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

// ---------------------------------------------------------------- the file

/// What identifies one version of a file, for conditional requests.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Validators {
    /// Strong: size and mtime to the nanosecond, e.g. `"1a-6553f1c2.1f3a"`.
    etag: String,
    /// Seconds since the epoch, never later than now (RFC 9110 §8.8.2.1).
    last_modified: i64,
}

impl Validators {
    fn of(meta: &Metadata, now: SystemTime) -> Validators {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let etag = format!(
            "\"{:x}-{:x}.{:x}\"",
            meta.len(),
            mtime.as_secs(),
            mtime.subsec_nanos()
        );
        let last_modified = mtime.as_secs().min(now.as_secs());
        Validators {
            etag,
            last_modified: i64::try_from(last_modified).unwrap_or(i64::MAX),
        }
    }

    fn last_modified_date(&self) -> String {
        let secs = u64::try_from(self.last_modified).unwrap_or(0);
        http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }
}

fn serve_file(found: Found, method: &Method, headers: &HeaderMap, url_path: &str) -> Response {
    let Found {
        mut file,
        meta,
        name,
    } = found;
    let size = meta.len();
    let validators = Validators::of(&meta, SystemTime::now());
    let mut resp = match evaluate_preconditions(headers, &validators) {
        Precondition::Failed => respond(412, "text/plain; charset=utf-8", "precondition failed\n"),
        Precondition::NotModified => {
            let mut resp = http::Response::new(ResponseBody::Empty);
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            resp
        }
        Precondition::Proceed => {
            let range = if method == Method::GET {
                requested_range(headers, &validators, size)
            } else {
                // Range is only defined for GET (RFC 9110 §14.2).
                RangeRequest::Whole
            };
            let content_type = content_type(Path::new(&name));
            match range {
                RangeRequest::Whole => respond(
                    200,
                    content_type,
                    ResponseBody::Reader {
                        reader: Box::new(file),
                        len: Some(size),
                    },
                ),
                RangeRequest::Part { start, len } => {
                    if let Err(e) = file.seek(SeekFrom::Start(start)) {
                        log::debug!("static: 404 for {url_path}: seek to {start}: {e}");
                        return not_found();
                    }
                    let mut resp = respond(
                        206,
                        content_type,
                        ResponseBody::Reader {
                            reader: Box::new(file.take(len)),
                            len: Some(len),
                        },
                    );
                    let end = start + len - 1;
                    set_header(
                        &mut resp,
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{end}/{size}"),
                    );
                    resp
                }
                RangeRequest::Unsatisfiable => {
                    let mut resp =
                        respond(416, "text/plain; charset=utf-8", "range not satisfiable\n");
                    set_header(&mut resp, header::CONTENT_RANGE, format!("bytes */{size}"));
                    resp
                }
            }
        }
    };
    if resp.status() != StatusCode::PRECONDITION_FAILED {
        set_header(&mut resp, header::ETAG, validators.etag.clone());
        set_header(
            &mut resp,
            header::LAST_MODIFIED,
            validators.last_modified_date(),
        );
        set_header(&mut resp, header::ACCEPT_RANGES, "bytes".to_owned());
    }
    resp
}

/// The content type for `path`'s extension.
fn content_type(path: &Path) -> &'static str {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return DEFAULT_CONTENT_TYPE;
    };
    CONTENT_TYPES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(ext))
        .map_or(DEFAULT_CONTENT_TYPE, |(_, content_type)| content_type)
}

fn not_found() -> Response {
    respond(404, "text/plain; charset=utf-8", "not found\n")
}

/// Insert a header whose value we built; one that is not a valid field value
/// (it cannot happen for the ones built here) is left out.
fn set_header(resp: &mut Response, name: HeaderName, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(name, value);
    }
}

// ---------------------------------------------------------------- preconditions

/// The outcome of the precondition headers.
#[derive(Debug, PartialEq, Eq)]
enum Precondition {
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: If-Match or If-Unmodified-Since does not hold.
    Failed,
}

/// The precondition headers in RFC 9110 §13.2.2 order: If-Match, else
/// If-Unmodified-Since; then If-None-Match, else If-Modified-Since (so a
/// present If-None-Match makes If-Modified-Since irrelevant). Only called for
/// GET and HEAD, for which a matching If-None-Match means 304.
fn evaluate_preconditions(headers: &HeaderMap, validators: &Validators) -> Precondition {
    if let Some(list) = joined(headers, &header::IF_MATCH) {
        if !etag_list_matches(&list, &validators.etag, Comparison::Strong) {
            return Precondition::Failed;
        }
    } else if let Some(date) = header_date(headers, &header::IF_UNMODIFIED_SINCE)
        && validators.last_modified > date
    {
        return Precondition::Failed;
    }
    if let Some(list) = joined(headers, &header::IF_NONE_MATCH) {
        if etag_list_matches(&list, &validators.etag, Comparison::Weak) {
            return Precondition::NotModified;
        }
    } else if let Some(date) = header_date(headers, &header::IF_MODIFIED_SINCE)
        && validators.last_modified <= date
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Every line of a list header joined with commas; None if absent or not text.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    (!values.is_empty()).then(|| values.join(","))
}

/// A single header holding an HTTP-date; None if absent or not a date, in
/// which case the header is ignored (RFC 9110 §13.1.3).
fn header_date(headers: &HeaderMap, name: &HeaderName) -> Option<i64> {
    parse_http_date(headers.get(name)?.to_str().ok()?)
}

/// How entity tags are compared (RFC 9110 §8.8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    /// Both strong and identical: If-Match and If-Range.
    Strong,
    /// Identical once any `W/` is ignored: If-None-Match.
    Weak,
}

/// Whether `list` (`*` or a comma-separated list of entity tags) matches our
/// strong tag `etag`. A malformed list matches nothing.
fn etag_list_matches(list: &str, etag: &str, comparison: Comparison) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return false;
        }
        let (is_weak, tagged) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        // An opaque-tag is a quoted string without quotes inside: it may hold commas.
        let Some(inner) = tagged.strip_prefix('"') else {
            return false;
        };
        let Some(close) = inner.find('"') else {
            return false;
        };
        let tag = &tagged[..close + 2];
        let counts = comparison == Comparison::Weak || !is_weak;
        if counts && tag == etag {
            return true;
        }
        rest = &inner[close + 1..];
    }
}

// ---------------------------------------------------------------- ranges

/// What part of the file a request gets.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// 200 with the whole file: no Range, one we ignore, or several ranges.
    Whole,
    /// 206 with `len` (> 0) bytes from `start`.
    Part { start: u64, len: u64 },
    /// 416: the range starts at or past the end.
    Unsatisfiable,
}

/// The range a GET gets, honouring If-Range: a Range whose If-Range does not
/// hold is ignored (RFC 9110 §13.1.5).
fn requested_range(headers: &HeaderMap, validators: &Validators, size: u64) -> RangeRequest {
    let mut ranges = headers.get_all(header::RANGE).iter();
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return RangeRequest::Whole;
    };
    let Ok(range) = range.to_str() else {
        return RangeRequest::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE)
        && !if_range_holds(if_range.to_str().unwrap_or_default(), validators)
    {
        return RangeRequest::Whole;
    }
    parse_range(range, size)
}

/// If-Range holds for an entity tag strongly equal to ours, or a date equal
/// to our Last-Modified.
fn if_range_holds(value: &str, validators: &Validators) -> bool {
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        value == validators.etag
    } else {
        parse_http_date(value) == Some(validators.last_modified)
    }
}

/// A `Range` value against a file of `size` bytes. A single range of bytes is
/// served (`a-b`, `a-`, `-n`); other units, bad syntax and several ranges
/// get the whole file, which RFC 9110 §14.2 allows.
fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some((unit, set)) = value.split_once('=') else {
        return RangeRequest::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Whole;
    }
    let specs: Vec<&str> = set
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let [spec] = specs.as_slice() else {
        return RangeRequest::Whole;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    if first.is_empty() {
        let Some(suffix) = position(last) else {
            return RangeRequest::Whole;
        };
        return match suffix {
            0 => RangeRequest::Unsatisfiable,
            // The last n bytes of nothing: there is no byte to point a
            // Content-Range at, so the (empty) whole.
            _ if size == 0 => RangeRequest::Whole,
            _ => {
                let len = suffix.min(size);
                RangeRequest::Part {
                    start: size - len,
                    len,
                }
            }
        };
    }
    let Some(start) = position(first) else {
        return RangeRequest::Whole;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match position(last) {
            Some(end) if end >= start => end,
            _ => return RangeRequest::Whole,
        }
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    let end = end.min(size - 1);
    RangeRequest::Part {
        start,
        len: end - start + 1,
    }
}

/// A byte position: ASCII digits only, saturating at `u64::MAX` (which is
/// past the end of any file).
fn position(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------- HTTP-dates

/// Seconds since the epoch of an HTTP-date in any of the three formats a
/// recipient must accept (RFC 9110 §5.6.7):
/// `Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT` and
/// `Sun Nov  6 08:49:37 1994`. The weekday is not checked.
fn parse_http_date(value: &str) -> Option<i64> {
    let value = value.trim();
    let (year, month, day, time) = if let Some((_, rest)) = value.split_once(", ") {
        let fields: Vec<&str> = rest.split(' ').collect();
        match fields.as_slice() {
            [day, month, year, time, "GMT"] if year.len() == 4 => {
                (number(year)?, month_number(month)?, number(day)?, *time)
            }
            [date, time, "GMT"] => {
                let mut parts = date.split('-');
                let (Some(day), Some(month), Some(year), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return None;
                };
                if year.len() != 2 {
                    return None;
                }
                // Two-digit years: 70-99 are 19xx, the rest 20xx.
                let year = number(year)?;
                let year = if year >= 70 { 1900 + year } else { 2000 + year };
                (year, month_number(month)?, number(day)?, *time)
            }
            _ => return None,
        }
    } else {
        let fields: Vec<&str> = value.split_whitespace().collect();
        match fields.as_slice() {
            [_weekday, month, day, time, year] if year.len() == 4 => {
                (number(year)?, month_number(month)?, number(day)?, *time)
            }
            _ => return None,
        }
    };
    let mut clock = time.split(':');
    let (Some(hour), Some(minute), Some(second), None) =
        (clock.next(), clock.next(), clock.next(), clock.next())
    else {
        return None;
    };
    let (hour, minute, second) = (number(hour)?, number(minute)?, number(second)?);
    if !(1..=days_in_month(year, month)).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// One to four ASCII digits.
fn number(digits: &str) -> Option<i64> {
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn month_number(name: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let index = MONTHS.iter().position(|m| *m == name)?;
    i64::try_from(index + 1).ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let is_leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if is_leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date: Howard Hinnant's
/// `days_from_civil`, the inverse of the one behind `http_date`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count from 0000-03-01, so the leap day ends a year, in 400-year eras.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 }; // 0 = March
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs;
    use std::path::PathBuf;
    use std::time::Duration;

    // ------------------------------------------------------------ ranges

    #[test]
    fn a_closed_range_is_the_bytes_from_first_to_last_inclusive() {
        assert_eq!(
            parse_range("bytes=2-5", 10),
            RangeRequest::Part { start: 2, len: 4 }
        );
        assert_eq!(
            parse_range("bytes=0-0", 10),
            RangeRequest::Part { start: 0, len: 1 }
        );
    }

    #[test]
    fn a_last_position_past_the_end_is_clamped_to_the_end() {
        assert_eq!(
            parse_range("bytes=8-100", 10),
            RangeRequest::Part { start: 8, len: 2 }
        );
        assert_eq!(
            parse_range("bytes=8-99999999999999999999999", 10),
            RangeRequest::Part { start: 8, len: 2 }
        );
    }

    #[test]
    fn an_open_range_runs_to_the_end() {
        assert_eq!(
            parse_range("bytes=3-", 10),
            RangeRequest::Part { start: 3, len: 7 }
        );
    }

    #[test]
    fn a_suffix_range_is_the_last_n_bytes_or_the_whole_file_if_shorter() {
        assert_eq!(
            parse_range("bytes=-4", 10),
            RangeRequest::Part { start: 6, len: 4 }
        );
        assert_eq!(
            parse_range("bytes=-40", 10),
            RangeRequest::Part { start: 0, len: 10 }
        );
    }

    #[test]
    fn ranges_starting_at_or_past_the_end_are_unsatisfiable() {
        assert_eq!(parse_range("bytes=10-", 10), RangeRequest::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=1000-2000", 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-0", 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn a_suffix_range_of_an_empty_file_gets_the_empty_file() {
        assert_eq!(parse_range("bytes=-5", 0), RangeRequest::Whole);
    }

    #[test]
    fn several_ranges_get_the_whole_file() {
        assert_eq!(parse_range("bytes=0-1,4-5", 10), RangeRequest::Whole);
        assert_eq!(parse_range("bytes=0-1, -2", 10), RangeRequest::Whole);
    }

    #[test]
    fn empty_list_elements_and_unit_case_are_tolerated() {
        assert_eq!(
            parse_range("bytes=, 2-5 ,", 10),
            RangeRequest::Part { start: 2, len: 4 }
        );
        assert_eq!(
            parse_range("Bytes=2-5", 10),
            RangeRequest::Part { start: 2, len: 4 }
        );
    }

    #[test]
    fn malformed_ranges_and_other_units_are_ignored() {
        for value in [
            "bytes=5-2",
            "bytes=-",
            "bytes=",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=1",
            "items=0-1",
            "0-1",
            "bytes=- 1",
        ] {
            assert_eq!(parse_range(value, 10), RangeRequest::Whole, "{value}");
        }
    }

    // ------------------------------------------------------------ URL paths

    fn names(url_path: &str) -> Result<Vec<String>, String> {
        url_segments(url_path).map(|s| s.into_iter().map(|s| s.name).collect())
    }

    #[test]
    fn segments_are_percent_decoded_as_utf8() {
        assert_eq!(
            names("/docs/a%20b/caf%C3%A9.txt"),
            Ok(vec!["docs".into(), "a b".into(), "café.txt".into()])
        );
    }

    #[test]
    fn empty_and_dot_segments_are_dropped() {
        assert_eq!(names("/"), Ok(vec![]));
        assert_eq!(names("//a/./b//"), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(names("/%2e/a"), Ok(vec!["a".into()]));
    }

    #[test]
    fn names_that_only_look_like_dots_are_kept() {
        assert_eq!(
            names("/.../..a/.hidden"),
            Ok(vec!["...".into(), "..a".into(), ".hidden".into()])
        );
    }

    #[test]
    fn escapes_out_of_the_directory_are_refused() {
        for path in [
            "/../etc/passwd",
            "/a/../../secret",
            "/a/..",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/secret",
            "/..%2fetc%2fpasswd",
            "/a%2F..%2F..%2Fsecret",
            "/%2fetc/passwd",
            "/..%5csecret",
            "/..\\secret",
            "/a%00.txt",
            "/%252e%252e/secret",
            "/%25252e%25252e/secret",
            "etc/passwd",
            "",
        ] {
            assert!(names(path).is_err(), "{path:?} was accepted");
        }
    }

    #[test]
    fn bad_escapes_and_non_utf8_are_refused() {
        for path in ["/a%", "/a%2", "/a%zz", "/%ff", "/%C3"] {
            assert!(names(path).is_err(), "{path:?} was accepted");
        }
    }

    #[test]
    fn a_lone_percent_sign_that_decodes_to_no_escape_is_a_name() {
        assert_eq!(names("/100%25"), Ok(vec!["100%".into()]));
    }

    use crate::sys::openat2::Resolver;

    /// DIR with `hello.txt`, `docs/index.html`, `empty/`, `.env`,
    /// `.git/config`, `out -> ../secret`, `inside -> hello.txt` and
    /// `docs/up -> ../hello.txt`, beside `secret`; removed on drop.
    struct Tree {
        base: PathBuf,
        app: StaticFiles,
    }

    impl Tree {
        fn new(name: &str) -> Tree {
            Tree::with(name, false, None)
        }

        fn with(name: &str, serves_dotfiles: bool, resolver: Option<Resolver>) -> Tree {
            let base = std::env::temp_dir().join(format!(
                "forkhorn-static-unit-{}-{name}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&base);
            let www = base.join("www");
            fs::create_dir_all(www.join("docs")).expect("create docs");
            fs::create_dir_all(www.join("empty")).expect("create empty");
            fs::create_dir_all(www.join(".git")).expect("create .git");
            fs::write(base.join("secret"), "secret").expect("write secret");
            fs::write(www.join("hello.txt"), "hello").expect("write hello");
            fs::write(www.join(".env"), "TOKEN=1").expect("write .env");
            fs::write(www.join(".git/config"), "[core]").expect("write .git/config");
            fs::write(www.join("docs/index.html"), "<p>docs</p>").expect("write index");
            std::os::unix::fs::symlink("../secret", www.join("out")).expect("symlink");
            std::os::unix::fs::symlink("hello.txt", www.join("inside")).expect("symlink");
            std::os::unix::fs::symlink("../hello.txt", www.join("docs/up")).expect("symlink");
            let mut app = StaticFiles::new(www.to_str().expect("utf-8 temp dir"), serves_dotfiles)
                .expect("app");
            if let Some(resolver) = resolver {
                app.root = app.root.with_resolver(resolver);
            }
            Tree { base, app }
        }

        /// The name under the root and the content `url_path` serves.
        fn served(&self, url_path: &str) -> Option<(String, String)> {
            match self.app.lookup(url_path, None) {
                Lookup::File(mut found) => {
                    let mut content = String::new();
                    found.file.read_to_string(&mut content).expect("read");
                    Some((found.name, content))
                }
                _ => None,
            }
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.base);
        }
    }

    #[test]
    fn lookup_finds_files_and_index_files_inside_the_root() {
        let tree = Tree::new("finds");
        assert_eq!(
            tree.served("/hello.txt"),
            Some(("hello.txt".into(), "hello".into()))
        );
        assert_eq!(
            tree.served("/docs/"),
            Some(("docs/index.html".into(), "<p>docs</p>".into()))
        );
    }

    #[test]
    fn lookup_follows_symlinks_that_stay_inside_the_root() {
        let tree = Tree::new("inside");
        assert_eq!(tree.served("/inside").map(|s| s.1), Some("hello".into()));
        assert_eq!(tree.served("/docs/up").map(|s| s.1), Some("hello".into()));
    }

    #[test]
    fn lookup_redirects_a_directory_without_its_slash() {
        let tree = Tree::new("redirects");
        assert!(matches!(
            tree.app.lookup("/docs", Some("x=1")),
            Lookup::AddSlash(l) if l == "/docs/?x=1"
        ));
        // Never to a `//host` URL, whatever the request looked like.
        assert!(matches!(
            tree.app.lookup("//docs", None),
            Lookup::AddSlash(l) if l == "/docs/"
        ));
    }

    #[test]
    fn lookup_finds_nothing_outside_the_root_or_without_an_index() {
        let tree = Tree::new("nothing");
        for path in [
            "/out",
            "/empty/",
            "/missing.txt",
            "/hello.txt/",
            "/../secret",
        ] {
            assert!(
                matches!(tree.app.lookup(path, None), Lookup::NotFound(_)),
                "{path}"
            );
        }
    }

    #[test]
    fn dotfiles_and_dot_directories_are_refused_unless_asked_for() {
        let tree = Tree::new("dots");
        for path in ["/.env", "/.git/config", "/.git/", "/docs/.hidden"] {
            assert!(
                matches!(tree.app.lookup(path, None), Lookup::NotFound(_)),
                "{path}"
            );
        }
        let tree = Tree::with("dots-on", true, None);
        assert_eq!(tree.served("/.env").map(|s| s.1), Some("TOKEN=1".into()));
        assert_eq!(
            tree.served("/.git/config").map(|s| s.1),
            Some("[core]".into())
        );
    }

    #[test]
    fn the_fallback_walk_serves_plain_paths_and_refuses_every_symlink() {
        let tree = Tree::with("walk", false, Some(Resolver::Walk));
        assert_eq!(tree.served("/hello.txt").map(|s| s.1), Some("hello".into()));
        assert_eq!(
            tree.served("/docs/").map(|s| s.1),
            Some("<p>docs</p>".into())
        );
        assert!(matches!(
            tree.app.lookup("/docs", None),
            Lookup::AddSlash(_)
        ));
        for path in ["/out", "/inside", "/docs/up", "/missing.txt"] {
            assert!(
                matches!(tree.app.lookup(path, None), Lookup::NotFound(_)),
                "{path}"
            );
        }
        // A symlinked directory on the way is refused too.
        std::os::unix::fs::symlink("docs", tree.base.join("www/linked")).expect("symlink");
        std::os::unix::fs::symlink("..", tree.base.join("www/parent")).expect("symlink");
        for path in [
            "/linked/index.html",
            "/parent/secret",
            "/parent/www/hello.txt",
        ] {
            assert!(
                matches!(tree.app.lookup(path, None), Lookup::NotFound(_)),
                "{path}"
            );
        }
    }

    #[test]
    fn openat2_refuses_symlinks_leading_out_and_absolute_ones() {
        let tree = Tree::new("parent");
        std::os::unix::fs::symlink("..", tree.base.join("www/parent")).expect("symlink");
        std::os::unix::fs::symlink("/etc", tree.base.join("www/etc")).expect("symlink");
        // Absolute symlinks are refused even when they land inside the root.
        let inside = tree.base.join("www/hello.txt");
        std::os::unix::fs::symlink(&inside, tree.base.join("www/abs")).expect("symlink");
        for path in ["/parent/secret", "/etc/passwd", "/etc/hostname", "/abs"] {
            assert!(
                matches!(tree.app.lookup(path, None), Lookup::NotFound(_)),
                "{path}"
            );
        }
    }

    // ------------------------------------------------------------ validators

    fn validators() -> Validators {
        Validators {
            etag: "\"5-1.0\"".to_owned(),
            last_modified: 784_111_777,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_star() {
        let v = validators();
        for value in ["\"5-1.0\"", "W/\"5-1.0\"", "\"x\", \"5-1.0\"", "*"] {
            assert_eq!(
                evaluate_preconditions(&headers(&[("if-none-match", value)]), &v),
                Precondition::NotModified,
                "{value}"
            );
        }
        assert_eq!(
            evaluate_preconditions(&headers(&[("if-none-match", "\"a,b\", \"c\"")]), &v),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let v = validators();
        let map = headers(&[
            ("if-none-match", "\"other\""),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert_eq!(evaluate_preconditions(&map, &v), Precondition::Proceed);
    }

    #[test]
    fn if_modified_since_is_not_modified_at_or_after_last_modified() {
        let v = validators();
        let at = headers(&[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        let before = headers(&[("if-modified-since", "Sun, 06 Nov 1994 08:49:36 GMT")]);
        let garbage = headers(&[("if-modified-since", "yesterday")]);
        assert_eq!(evaluate_preconditions(&at, &v), Precondition::NotModified);
        assert_eq!(evaluate_preconditions(&before, &v), Precondition::Proceed);
        assert_eq!(evaluate_preconditions(&garbage, &v), Precondition::Proceed);
    }

    #[test]
    fn if_match_needs_a_strong_match() {
        let v = validators();
        let strong = headers(&[("if-match", "\"5-1.0\"")]);
        let weak = headers(&[("if-match", "W/\"5-1.0\"")]);
        assert_eq!(evaluate_preconditions(&strong, &v), Precondition::Proceed);
        assert_eq!(evaluate_preconditions(&weak, &v), Precondition::Failed);
    }

    #[test]
    fn if_unmodified_since_fails_once_the_file_changed() {
        let v = validators();
        let before = headers(&[("if-unmodified-since", "Sun, 06 Nov 1994 08:49:36 GMT")]);
        assert_eq!(evaluate_preconditions(&before, &v), Precondition::Failed);
    }

    #[test]
    fn if_range_with_a_different_validator_gets_the_whole_file() {
        let v = validators();
        let current = headers(&[("range", "bytes=1-2"), ("if-range", "\"5-1.0\"")]);
        let stale = headers(&[("range", "bytes=1-2"), ("if-range", "\"old\"")]);
        let weak = headers(&[("range", "bytes=1-2"), ("if-range", "W/\"5-1.0\"")]);
        let date = headers(&[
            ("range", "bytes=1-2"),
            ("if-range", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let part = RangeRequest::Part { start: 1, len: 2 };
        assert_eq!(requested_range(&current, &v, 5), part);
        assert_eq!(requested_range(&date, &v, 5), part);
        assert_eq!(requested_range(&stale, &v, 5), RangeRequest::Whole);
        assert_eq!(requested_range(&weak, &v, 5), RangeRequest::Whole);
    }

    #[test]
    fn last_modified_is_never_in_the_future() {
        let tree = Tree::new("future");
        let file = fs::File::options()
            .write(true)
            .open(tree.base.join("www/hello.txt"))
            .expect("open hello");
        let tomorrow = SystemTime::now() + Duration::from_secs(86_400);
        file.set_modified(tomorrow).expect("set mtime");
        let now = SystemTime::now();
        let v = Validators::of(&file.metadata().expect("stat"), now);
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        assert_eq!(v.last_modified, i64::try_from(now_secs).expect("fits"));
    }

    // ------------------------------------------------------------ dates

    #[test]
    fn http_dates_parse_in_all_three_formats() {
        for value in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(value), Some(784_111_777), "{value}");
        }
    }

    #[test]
    fn http_dates_round_trip_through_http_date() {
        for secs in [0u64, 951_782_400, 1_700_000_000, 4_102_444_800] {
            let formatted = http_date(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(
                parse_http_date(&formatted),
                Some(i64::try_from(secs).expect("fits")),
                "{formatted}"
            );
        }
    }

    #[test]
    fn malformed_http_dates_are_none() {
        for value in [
            "",
            "yesterday",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(value), None, "{value}");
        }
    }

    // ------------------------------------------------------------ content types

    #[test]
    fn content_type_comes_from_the_extension_in_any_case() {
        assert_eq!(
            content_type(Path::new("a/index.HTML")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x.woff2")), "font/woff2");
        assert_eq!(content_type(Path::new("x.tar.gz")), "application/gzip");
        assert_eq!(content_type(Path::new("Makefile")), DEFAULT_CONTENT_TYPE);
        assert_eq!(content_type(Path::new("x.exe")), DEFAULT_CONTENT_TYPE);
    }
}
