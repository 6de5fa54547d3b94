//! `module:callable`: which Python object serves the requests. Parsed in
//! the master without Python, so a malformed spec is one clear error before
//! anything is forked.

/// A WSGI app spec, as gunicorn accepts it: `module:name`, `pkg.sub:name`,
/// `module:obj.attr` or `module:factory(args)` (a factory called once per
/// worker, with literal arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonSpec {
    /// Dotted module path, e.g. `myproject.wsgi`.
    pub module: String,
    /// Attribute path inside the module, e.g. `app` or `create_app`.
    pub attr: String,
    /// The text between the parentheses for a factory call (`""` for
    /// `create_app()`), or `None` when the attribute is the app itself.
    pub call_args: Option<String>,
}

impl PythonSpec {
    /// Parse `spec`; `None` if it does not have the shape of a Python app
    /// (so the caller can report it among the other app forms).
    pub fn parse(spec: &str) -> Option<PythonSpec> {
        let (module, rest) = spec.split_once(':')?;
        if !is_dotted_name(module) {
            return None;
        }
        let (attr, call_args) = match rest.split_once('(') {
            Some((attr, args)) => (attr, Some(args.strip_suffix(')')?.trim().to_owned())),
            None => (rest, None),
        };
        if !is_dotted_name(attr) {
            return None;
        }
        Some(PythonSpec {
            module: module.to_owned(),
            attr: attr.to_owned(),
            call_args,
        })
    }
}

impl std::fmt::Display for PythonSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.module, self.attr)?;
        if let Some(args) = &self.call_args {
            write!(f, "({args})")?;
        }
        Ok(())
    }
}

/// `a`, `a.b_2.c`: Python identifiers (ASCII or not) joined by dots.
fn is_dotted_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
                && chars.all(|c| c == '_' || c.is_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_gunicorn_accepts_parse() {
        let p = PythonSpec::parse("app:app").expect("plain");
        assert_eq!((p.module.as_str(), p.attr.as_str()), ("app", "app"));
        assert_eq!(p.call_args, None);
        let p = PythonSpec::parse("myproject.wsgi:application").expect("dotted");
        assert_eq!(p.module, "myproject.wsgi");
        let p = PythonSpec::parse("factory:create_app()").expect("factory");
        assert_eq!(p.call_args.as_deref(), Some(""));
        let p = PythonSpec::parse("factory:create_app('prod', debug=False)").expect("args");
        assert_eq!(p.call_args.as_deref(), Some("'prod', debug=False"));
        let p = PythonSpec::parse("m:obj.wsgi_app").expect("attribute path");
        assert_eq!(p.attr, "obj.wsgi_app");
        assert_eq!(p.to_string(), "m:obj.wsgi_app");
    }

    #[test]
    fn shapes_that_are_not_python_are_refused() {
        for bad in [
            "app",
            "app:",
            ":app",
            "a-b:app",
            "app:1x",
            "app:f(",
            "app:f)x",
            "a..b:app",
            "static:/srv/www",
            "chat:http://x",
        ] {
            assert_eq!(PythonSpec::parse(bad), None, "{bad}");
        }
    }
}
