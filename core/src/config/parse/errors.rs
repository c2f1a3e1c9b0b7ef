//! The error model: located problems, collected together, with secrets scrubbed.

use std::collections::HashSet;
use std::fmt;

use super::read::Field;
use super::yaml::Key;

/// One problem, located: the file, the field path (`resourceClasses."a/b".scaling.minReplicas`),
/// what is wrong with the value, and the line and column when known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldError {
    pub file: String,
    pub path: String,
    pub message: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration")?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// More problems than this are summarised: nobody reads the ten-thousandth.
const MAX_REPORTED_ERRORS: usize = 100;
/// Secrets shorter than this are not scrubbed from messages: they would match ordinary words.
const MIN_SCRUBBED_SECRET_LEN: usize = 4;

/// Collects problems; remembers every secret read so a message can never carry one.
pub(super) struct Errors {
    pub(super) list: Vec<FieldError>,
    /// What `list` holds, so a problem seen through every class (a bad default) shows once.
    seen: HashSet<FieldError>,
    pub(super) secrets: Vec<String>,
    /// File names in reading order: errors are listed file by file, top to bottom.
    files: Vec<String>,
}

impl Errors {
    /// `secrets` are known before reading (the API token from the environment); `files` are the
    /// names of the files in reading order.
    pub(super) fn new(secrets: Vec<String>, files: Vec<String>) -> Self {
        Self {
            list: Vec::new(),
            seen: HashSet::new(),
            secrets,
            files,
        }
    }

    pub(super) fn push(&mut self, error: FieldError) {
        if self.seen.insert(error.clone()) {
            self.list.push(error);
        }
    }

    pub(super) fn at(
        &mut self,
        file: &str,
        path: &str,
        location: Option<(u64, u64)>,
        message: impl Into<String>,
    ) {
        self.push(FieldError {
            file: file.to_owned(),
            path: path.to_owned(),
            message: message.into(),
            line: location.filter(|l| l.0 > 0).map(|l| l.0),
            column: location.filter(|l| l.0 > 0).map(|l| l.1),
        });
    }

    pub(super) fn field(&mut self, field: &Field<'_>, message: impl Into<String>) {
        self.at(
            field.file,
            &field.path,
            Some((field.node.line, field.node.column)),
            message,
        );
    }

    pub(super) fn key(
        &mut self,
        file: &str,
        path: &str,
        key: Option<&Key>,
        message: impl Into<String>,
    ) {
        self.at(file, path, key.map(|k| (k.line, k.column)), message);
    }

    /// The errors in file and line order, at most `MAX_REPORTED_ERRORS` of them, with any
    /// secret that slipped into a message replaced.
    pub(super) fn finish(self) -> ConfigError {
        let Self {
            mut list,
            secrets,
            files,
            ..
        } = self;
        let rank = |file: &str| files.iter().position(|f| f == file).unwrap_or(usize::MAX);
        list.sort_by_key(|e| (rank(&e.file), e.line.is_none(), e.line, e.column));
        if list.len() > MAX_REPORTED_ERRORS {
            let hidden = list.len() - MAX_REPORTED_ERRORS;
            list.truncate(MAX_REPORTED_ERRORS);
            list.push(FieldError {
                file: list.last().map(|e| e.file.clone()).unwrap_or_default(),
                path: String::new(),
                message: format!("{hidden} more problems are not shown"),
                line: None,
                column: None,
            });
        }
        let secrets: Vec<&str> = secrets
            .iter()
            .map(|s| s.trim())
            .filter(|s| s.chars().count() >= MIN_SCRUBBED_SECRET_LEN)
            .collect();
        let scrub = |text: &str| {
            secrets
                .iter()
                .fold(text.to_owned(), |t, s| t.replace(s, "<redacted>"))
        };
        let errors = list
            .into_iter()
            .map(|e| FieldError {
                path: scrub(&e.path),
                message: scrub(&e.message),
                ..e
            })
            .collect();
        ConfigError { errors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(file: &str, line: Option<u64>, message: &str) -> FieldError {
        FieldError {
            file: file.to_owned(),
            path: "p".to_owned(),
            message: message.to_owned(),
            line,
            column: line.map(|_| 1),
        }
    }

    #[test]
    fn errors_come_file_by_file_top_to_bottom_once_each() {
        let mut errs = Errors::new(
            Vec::new(),
            vec!["config.yaml".into(), "secrets.yaml".into()],
        );
        errs.push(error("secrets.yaml", Some(1), "c"));
        errs.push(error("config.yaml", None, "b"));
        errs.push(error("config.yaml", Some(7), "a"));
        errs.push(error("config.yaml", Some(7), "a"));
        let messages: Vec<String> = errs
            .finish()
            .errors
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(messages, ["a", "b", "c"]);
    }

    #[test]
    fn secrets_read_are_scrubbed_from_every_message_but_short_ones_are_not() {
        let mut errs = Errors::new(vec!["env-token-1".into()], vec!["c.yaml".into()]);
        errs.secrets.push("file-token-2\n".into());
        errs.secrets.push("abc".into());
        errs.push(error(
            "c.yaml",
            Some(1),
            "saw env-token-1 and file-token-2 near abc",
        ));
        let err = errs.finish();
        assert_eq!(
            err.errors[0].message,
            "saw <redacted> and <redacted> near abc"
        );
        assert_eq!(
            err.to_string(),
            "invalid configuration\n  c.yaml:1:1: p: saw <redacted> and <redacted> near abc"
        );
    }

    #[test]
    fn past_the_limit_problems_are_counted_not_listed() {
        let mut errs = Errors::new(Vec::new(), vec!["c.yaml".into()]);
        for line in 1..=MAX_REPORTED_ERRORS as u64 + 5 {
            errs.push(error("c.yaml", Some(line), "bad"));
        }
        let err = errs.finish();
        assert_eq!(err.errors.len(), MAX_REPORTED_ERRORS + 1);
        assert_eq!(
            err.errors.last().map(|e| e.message.as_str()),
            Some("5 more problems are not shown")
        );
    }
}
