//! Where settings come from, and in which order they win: built-in
//! defaults, then the environment (`WEB_CONCURRENCY`, `PORT`), then the
//! `-c` TOML file, then `FORKHORN_CMD_ARGS`, then the command line.
//!
//! The file's keys are the long flag names with `-` written as `_`
//! (`max_requests_jitter = 50`, `bind = ["127.0.0.1:8000"]`). Every source is
//! turned into command-line words and parsed by the one clap definition, so
//! a setting means the same thing wherever it is written; an error in the
//! file names the file, the key and the line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgAction, CommandFactory, FromArgMatches};

use crate::config::{Args, Config, ConfigError};

/// Flags that steer forkhorn itself rather than configure the server; they
/// have no key in the file.
const NOT_IN_FILE: &[&str] = &["config", "check_config", "print_config", "help", "version"];

/// Where one setting came from in the file.
#[derive(Debug, Clone)]
struct Origin {
    file: PathBuf,
    line: usize,
    key: String,
}

/// Why the settings could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// Not a command line forkhorn understands (an unknown flag, a file it
    /// cannot read): clap's error, shown with where to look for help.
    Usage(clap::Error),
    /// A value not valid for its flag, pointed at where it was set.
    Value(ConfigError),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Usage(e) => f.write_str(&crate::config::usage_error_line(e)),
            LoadError::Value(e) => f.write_str(&e.0),
        }
    }
}

impl From<clap::Error> for LoadError {
    fn from(e: clap::Error) -> LoadError {
        LoadError::Usage(e)
    }
}

/// Point an error that starts `--flag VALUE` at where VALUE was set: the
/// file (file, line and key, from `origins`) or the environment variable
/// (when `from_env` says the flag's value came from there). Values from the
/// command line keep the flag's name as it is.
fn locate(
    e: ConfigError,
    origins: &BTreeMap<String, Origin>,
    from_env: impl Fn(&str) -> bool,
) -> ConfigError {
    let cmd = Args::command();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let flag = format!("--{long}");
        // `--max-requests` must not claim an error about `--max-requests-jitter`.
        let Some(rest) = e.0.strip_prefix(&flag) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with(':')) {
            continue;
        }
        let id = arg.get_id().as_str();
        if let Some(o) = origins.get(id) {
            return ConfigError(format!(
                "{}:{}: {}: {}",
                o.file.display(),
                o.line,
                o.key,
                e.0
            ));
        }
        if from_env(id)
            && let Some(var) = arg.get_env()
        {
            let var = var.to_string_lossy();
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            return ConfigError(format!("{var}={rest} ({var} sets {flag}; fix or unset it)"));
        }
        return e;
    }
    e
}

/// The one flag definition without its environment variables, to check
/// what one source (command line, FORKHORN_CMD_ARGS, file) says on its own.
fn command_without_env() -> clap::Command {
    Args::command().mut_args(|a| {
        if a.get_env().is_some() {
            a.env(None::<&str>)
        } else {
            a
        }
    })
}

/// Parse one source's words on their own, so a bad value is blamed on the
/// source that holds it (`blame` says how).
fn parse_source(
    words: &[OsString],
    blame: impl Fn(ConfigError) -> ConfigError,
) -> Result<clap::ArgMatches, LoadError> {
    command_without_env()
        .try_get_matches_from(words)
        .map_err(|e| match crate::config::value_error(&e) {
            Some(message) => LoadError::Value(blame(ConfigError(message))),
            // Help, version and usage errors as the whole definition gives
            // them (its help names the environment variables).
            None => LoadError::Usage(
                Args::command()
                    .try_get_matches_from(words)
                    .err()
                    .unwrap_or(e),
            ),
        })
}

/// Settings merged from every source.
pub struct Loaded {
    /// Every source merged into one set of flags, as if all were given on
    /// the command line; not yet checked (see [`Loaded::config`]).
    pub args: Args,
    /// The merged matches, for `--print-config`.
    matches: clap::ArgMatches,
    /// Flag ids whose value came from the file.
    origins: BTreeMap<String, Origin>,
}

impl Loaded {
    /// Check the merged settings; an error caused by a file value names the
    /// file, key and line.
    pub fn config(&self) -> Result<Config, ConfigError> {
        Config::from_args(&self.args).map_err(|e| {
            locate(e, &self.origins, |id| {
                self.matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable)
            })
        })
    }

    /// Whether an APP argument was given (on the command line, in
    /// FORKHORN_CMD_ARGS or in the file), as opposed to defaulted.
    pub fn app_given(&self) -> bool {
        self.matches.value_source("app") != Some(clap::parser::ValueSource::DefaultValue)
    }

    /// The resolved settings as a config file `-c` accepts back.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# forkhorn configuration, resolved from every source\n");
        let cmd = Args::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if NOT_IN_FILE.contains(&id) {
                continue;
            }
            let key = id.to_owned();
            match arg.get_action() {
                ArgAction::SetTrue => {
                    let on = self.matches.get_flag(id);
                    out.push_str(&format!("{key} = {on}\n"));
                }
                _ => {
                    let values: Vec<String> = self
                        .matches
                        .get_raw(id)
                        .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                        .unwrap_or_default();
                    let multiple = matches!(arg.get_action(), ArgAction::Append);
                    match (multiple, values.as_slice()) {
                        (true, _) => {
                            let items: Vec<String> =
                                values.iter().map(|v| toml_string(v)).collect();
                            out.push_str(&format!("{key} = [{}]\n", items.join(", ")));
                        }
                        (false, []) => out.push_str(&format!("# {key} is not set\n")),
                        (false, [v, ..]) => out.push_str(&format!("{key} = {}\n", toml_scalar(v))),
                    }
                }
            }
        }
        out
    }
}

fn toml_string(v: &str) -> String {
    toml::Value::String(v.to_owned()).to_string()
}

/// Numbers stay numbers; everything else is a string.
fn toml_scalar(v: &str) -> String {
    let canonical_int = v.parse::<i64>().is_ok_and(|i| i.to_string() == v);
    let canonical_float = v
        .parse::<f64>()
        .is_ok_and(|f| f.is_finite() && f.to_string() == v && v.contains('.'));
    if canonical_int || canonical_float {
        v.to_owned()
    } else {
        toml_string(v)
    }
}

/// Merge every source into one set of arguments (see the module docs).
///
/// Each source is parsed on its own first, so a bad value is blamed on the
/// one that holds it: the command line and `FORKHORN_CMD_ARGS` by flag, the
/// file by file, line and key, the environment by variable.
pub fn load(cli: Vec<OsString>) -> Result<Loaded, LoadError> {
    let program = cli.first().cloned().unwrap_or_else(|| "forkhorn".into());
    let cli_only = parse_source(&cli, |e| e)?;
    let cli_args = cli.get(1..).unwrap_or_default().to_vec();

    let env_args: Vec<OsString> = match std::env::var("FORKHORN_CMD_ARGS") {
        Ok(words) if !words.trim().is_empty() => match shlex::split(&words) {
            Some(w) => w.into_iter().map(OsString::from).collect(),
            None => {
                return Err(LoadError::Usage(Args::command().error(
                    clap::error::ErrorKind::InvalidValue,
                    format!("FORKHORN_CMD_ARGS has an unclosed quote: {words}"),
                )));
            }
        },
        _ => Vec::new(),
    };
    let env_words: Vec<OsString> = std::iter::once(program.clone())
        .chain(env_args.iter().cloned())
        .collect();
    let env_matches = parse_source(&env_words, |e| e)?;

    let config_path = cli_only
        .get_one::<PathBuf>("config")
        .or_else(|| env_matches.get_one::<PathBuf>("config"))
        .cloned();
    let (mut file_args, origins) = match &config_path {
        Some(path) => read_file(path)
            .map_err(|e| Args::command().error(clap::error::ErrorKind::InvalidValue, e.0))?,
        None => (Vec::new(), BTreeMap::new()),
    };
    // Lists (bind) are replaced, not extended, by a later source.
    let given_later = |id: &str| {
        [&cli_only, &env_matches]
            .iter()
            .any(|m| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
    };
    if given_later("bind") {
        file_args = without_flag(file_args, "--bind");
    }
    let file_words: Vec<OsString> = std::iter::once(program.clone())
        .chain(file_args.iter().cloned())
        .collect();
    match parse_source(&file_words, |e| locate(e, &origins, |_| false)) {
        Err(e @ LoadError::Value(_)) => return Err(e),
        // Anything else the merged words below show as they always have.
        Ok(_) | Err(LoadError::Usage(_)) => {}
    }
    let mut argv = vec![program];
    argv.extend(file_args);
    argv.extend(env_args);
    argv.extend(cli_args);
    // Every word was checked above; a bad value now is the environment's.
    let matches =
        Args::command().try_get_matches_from(&argv).map_err(
            |e| match crate::config::value_error(&e) {
                Some(message) => {
                    LoadError::Value(locate(ConfigError(message), &BTreeMap::new(), |_| true))
                }
                None => LoadError::Usage(e),
            },
        )?;
    let args = Args::from_arg_matches(&matches)?;
    // Only settings the file still decides keep pointing at it.
    let origins = origins
        .into_iter()
        .filter(|(id, _)| !given_later(id))
        .collect();
    Ok(Loaded {
        args,
        matches,
        origins,
    })
}

fn without_flag(args: Vec<OsString>, flag: &str) -> Vec<OsString> {
    let prefix = format!("{flag}=");
    args.into_iter()
        .filter(|a| !a.to_string_lossy().starts_with(&prefix))
        .collect()
}

/// Turn the file into `--flag=value` words.
fn read_file(path: &Path) -> Result<(Vec<OsString>, BTreeMap<String, Origin>), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        ConfigError(format!(
            "{}:{line}: not valid TOML: {}",
            path.display(),
            e.message()
        ))
    })?;
    let cmd = Args::command();
    let mut words = Vec::new();
    let mut origins = BTreeMap::new();
    for (key, value) in &table {
        let line = line_of(&text, key);
        let at = |msg: String| ConfigError(format!("{}:{line}: {key}: {msg}", path.display()));
        // gunicorn's config names the app `wsgi_app`.
        let id = if key == "wsgi_app" {
            "app"
        } else {
            key.as_str()
        };
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id().as_str() == id && !NOT_IN_FILE.contains(&id))
            .ok_or_else(|| at(unknown_key(key, &cmd)))?;
        let flag = match arg.get_long() {
            Some(long) => format!("--{long}"),
            // The APP positional.
            None => String::new(),
        };
        let scalar = |v: &toml::Value| -> Result<String, ConfigError> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                other => Err(at(format!(
                    "expected a string or number, found {}",
                    other.type_str()
                ))),
            }
        };
        let mut push = |v: String| {
            if flag.is_empty() {
                words.push(OsString::from(v));
            } else {
                words.push(OsString::from(format!("{flag}={v}")));
            }
        };
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(on)) => {
                if *on {
                    words.push(OsString::from(flag.clone()));
                }
            }
            (ArgAction::SetTrue, other) => {
                return Err(at(format!(
                    "expected true or false, found {}",
                    other.type_str()
                )));
            }
            (ArgAction::Append, toml::Value::Array(items)) => {
                for item in items {
                    push(scalar(item)?);
                }
            }
            (ArgAction::Append, single) => push(scalar(single)?),
            (_, toml::Value::Array(_)) => {
                return Err(at("expected a single value, found an array".to_owned()));
            }
            (_, v) => push(scalar(v)?),
        }
        origins.insert(
            id.to_owned(),
            Origin {
                file: path.to_path_buf(),
                line,
                key: key.clone(),
            },
        );
    }
    Ok((words, origins))
}

/// How sure a near-miss must be before it is offered; clap uses the same
/// measure (Jaro similarity) and threshold for its "a similar argument
/// exists" tips.
const SUGGESTION_MIN_SIMILARITY: f64 = 0.7;

/// "unknown key", with the nearest real key when one is close.
fn unknown_key(key: &str, cmd: &clap::Command) -> String {
    let keys = cmd
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| !NOT_IN_FILE.contains(id));
    match nearest(key, keys) {
        Some(near) => format!("unknown key; did you mean `{near}`?"),
        None => {
            "unknown key; keys are the long flag names with _ for -, e.g. max_requests".to_owned()
        }
    }
}

/// The candidate most like `typed`, if it is like it at all. A flag's
/// spelling (`max-requests`) finds its key (`max_requests`).
fn nearest<'a>(typed: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let typed = typed.replace('-', "_");
    candidates
        .map(|c| (strsim::jaro(&typed, c), c))
        .filter(|(score, _)| *score > SUGGESTION_MIN_SIMILARITY)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The line on which `key` is set (1-based), for error messages.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || l.strip_prefix(&format!("\"{key}\""))
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("forkhorn-cfg-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("forkhorn.toml");
        std::fs::write(&path, text).expect("write");
        path
    }

    fn load_with(path: &Path, extra: &[&str]) -> Result<Loaded, String> {
        let mut argv: Vec<OsString> = vec!["forkhorn".into(), "-c".into(), path.into()];
        argv.extend(extra.iter().map(OsString::from));
        load(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn file_settings_apply_and_the_command_line_wins() {
        let path = write(
            "wins",
            "workers = 3\ntimeout = 7\nbind = [\"127.0.0.1:0\"]\napp = \"echo\"\n",
        );
        let loaded = load_with(&path, &["-t", "9"]).expect("load");
        let c = loaded.config().expect("config");
        assert_eq!(c.worker.workers, 3);
        assert_eq!(c.worker.timeout, Some(std::time::Duration::from_secs(9)));
        assert_eq!(c.master.app, "echo");
    }

    #[test]
    fn a_bind_on_the_command_line_replaces_the_files() {
        let path = write("bind", "bind = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n");
        let c = load_with(&path, &["-b", "127.0.0.1:3"])
            .expect("load")
            .config()
            .expect("config");
        assert_eq!(
            c.master.binds,
            vec![crate::listener::Bind::parse("127.0.0.1:3").expect("spec")]
        );
    }

    #[test]
    fn an_unknown_key_names_the_file_and_line() {
        let path = write("unknown", "workers = 2\n\nwrokers = 3\n");
        let err = load_with(&path, &[]).err().expect("must fail");
        assert!(
            err.contains(&format!("{}:3: wrokers: unknown key", path.display())),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_suggests_the_nearest_real_one() {
        let keys = ["timeout", "workers", "max_requests", "max_requests_jitter"];
        assert_eq!(nearest("timout", keys.into_iter()), Some("timeout"));
        assert_eq!(nearest("wrokers", keys.into_iter()), Some("workers"));
        assert_eq!(
            nearest("max-requests", keys.into_iter()),
            Some("max_requests")
        );
        assert_eq!(nearest("frobnicate", keys.into_iter()), None);
        let path = write("typo", "timout = 3\n");
        let err = load_with(&path, &[]).err().expect("must fail");
        assert!(
            err.contains(":1: timout: unknown key; did you mean `timeout`?"),
            "{err}"
        );
    }

    #[test]
    fn an_error_is_not_pinned_on_a_flag_whose_name_is_a_prefix() {
        // max_requests comes from the file, the bad jitter from the command line.
        let path = write("prefix", "max_requests = 10\n");
        let err = load_with(&path, &["--max-requests-jitter", "-1"])
            .err()
            .expect("bad jitter");
        assert_eq!(err, "--max-requests-jitter -1: must not be negative");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let path = write("type", "bind = \"127.0.0.1:0\"\nkeep_alive = true\n");
        let err = load_with(&path, &[]).err().expect("must fail");
        assert!(
            err.contains(":2: keep_alive: expected a string or number, found boolean"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_value_names_the_file_key_and_line() {
        let path = write("value", "# comment\ntimeout = -1\n");
        let err = load_with(&path, &[]).err().expect("bad value");
        assert!(
            err.starts_with(&format!("{}:2: timeout: --timeout -1", path.display())),
            "{err}"
        );
    }

    #[test]
    fn printed_config_reads_back_to_the_same_settings() {
        let path = write(
            "roundtrip",
            "workers = 3\nbind = [\"127.0.0.1:0\", \"unix:/tmp/x.sock\"]\nmax_requests = 100\nmax_requests_jitter = 7\naccess_logfile = \"-\"\ninitgroups = true\n",
        );
        let first = load_with(&path, &[]).expect("load");
        let printed = first.to_toml();
        let again = write("roundtrip2", &printed);
        let second = load_with(&again, &[]).expect("reload");
        assert_eq!(second.to_toml(), printed);
        assert_eq!(
            format!("{:?}", second.config().expect("c2")),
            format!("{:?}", first.config().expect("c1"))
        );
    }
}
