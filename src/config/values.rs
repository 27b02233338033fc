//! A directive's words → typed values (numbers, sizes, paths, URLs, command lines).
//!
//! Every reader names the directive as it was written and points at the offending word, so the
//! settings that use them only say where a value goes.

use std::path::{Component, Path, PathBuf};

use super::syntax::{ConfigError, Directive, Pos, Word};
use super::BucketUrl;

pub(super) fn err(pos: &Pos, message: impl Into<String>) -> ConfigError {
    ConfigError::new(pos, message)
}

pub(super) fn single(d: &Directive) -> Result<&Word, ConfigError> {
    match d.values.as_slice() {
        [one] => Ok(one),
        [] => Err(err(&d.name.pos, format!("{} needs a value", d.name.text))),
        [_, extra, ..] => Err(err(
            &extra.pos,
            format!("{} takes one value, found more", d.name.text),
        )),
    }
}

/// The single value as written.
pub(super) fn text(d: &Directive) -> Result<String, ConfigError> {
    Ok(single(d)?.text.clone())
}

pub(super) fn number(d: &Directive) -> Result<u64, ConfigError> {
    let w = single(d)?;
    w.text.parse().map_err(|_| {
        err(
            &w.pos,
            format!("{} must be a whole number, not '{}'", d.name.text, w.text),
        )
    })
}

pub(super) fn positive(d: &Directive) -> Result<u64, ConfigError> {
    let n = number(d)?;
    if n == 0 {
        return Err(err(
            &single(d)?.pos,
            format!("{} must be at least 1", d.name.text),
        ));
    }
    Ok(n)
}

/// A value with no word means yes, as in Config::ApacheFormat.
pub(super) fn boolean(d: &Directive) -> Result<bool, ConfigError> {
    if d.values.is_empty() {
        return Ok(true);
    }
    let w = single(d)?;
    match w.text.to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Ok(true),
        "0" | "no" | "off" | "false" => Ok(false),
        _ => Err(err(
            &w.pos,
            format!(
                "{} must be yes/no/on/off/true/false/1/0, not '{}'",
                d.name.text, w.text
            ),
        )),
    }
}

/// One of a fixed set of words (case-insensitive); `refusal` words the error for another.
pub(super) fn choice<T: Copy>(
    d: &Directive,
    choices: &[(&str, T)],
    refusal: impl Fn(&str) -> String,
) -> Result<T, ConfigError> {
    let w = single(d)?;
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&w.text))
        .map(|(_, value)| *value)
        .ok_or_else(|| err(&w.pos, refusal(&w.text)))
}

/// `25MiB` → (`25`, `MiB`): the leading digits and what follows them, spaces around trimmed.
fn number_and_unit(text: &str) -> (&str, &str) {
    let text = text.trim();
    text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    )
}

/// Bytes, with an optional K/M/G (powers of 1000) or KiB/MiB/GiB (powers of 1024) suffix.
pub(super) fn size(d: &Directive) -> Result<u64, ConfigError> {
    let w = single(d)?;
    let (digits, unit) = number_and_unit(&w.text);
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => u64::MAX,
    };
    match digits.parse::<u64>() {
        Ok(n) if mult != u64::MAX && n > 0 => n
            .checked_mul(mult)
            .ok_or_else(|| err(&w.pos, format!("{} is too large", d.name.text))),
        _ => Err(err(
            &w.pos,
            format!(
                "{} must be a size like 25000000, 25M or 16MiB, not '{}'",
                d.name.text, w.text
            ),
        )),
    }
}

/// A span with its unit: `30s`, `15m`, `36h` or `7d` (zero allowed).
pub(super) fn duration(d: &Directive) -> Result<chrono::Duration, ConfigError> {
    let w = single(d)?;
    span(&w.text).map_err(|e| err(&w.pos, format!("{} {e}", d.name.text)))
}

/// A span as the configuration and the command line write it (`30s`, `15m`, `36h`, `7d`, zero
/// allowed, at most 100 years); the error completes a sentence about what was given.
pub fn span(text: &str) -> Result<chrono::Duration, String> {
    let (digits, unit) = number_and_unit(text);
    let seconds: Option<i64> = match unit.to_ascii_lowercase().as_str() {
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        "d" => Some(86_400),
        _ => None,
    };
    match (digits.parse::<i64>(), seconds) {
        (Ok(n), Some(unit)) => n
            .checked_mul(unit)
            .filter(|s| *s <= 100 * 365 * 86_400)
            .map(chrono::Duration::seconds)
            .ok_or_else(|| "is too long".to_string()),
        _ => Err(format!(
            "must be a number with a unit, s, m, h or d (like 30s or 7d), not '{}'",
            text.trim()
        )),
    }
}

pub(super) fn absolute_path(d_name: &str, w: &Word) -> Result<PathBuf, ConfigError> {
    let path = Path::new(&w.text);
    if !path.is_absolute() {
        return Err(err(
            &w.pos,
            format!("{d_name} needs an absolute path, not '{}'", w.text),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(err(
            &w.pos,
            format!("{d_name} path '{}' must not contain '..'", w.text),
        ));
    }
    Ok(path.components().collect())
}

pub(super) fn endpoint(d: &Directive) -> Result<String, ConfigError> {
    let w = single(d)?;
    if !(w.text.starts_with("http://") || w.text.starts_with("https://")) {
        return Err(err(
            &w.pos,
            format!(
                "Endpoint must be an http:// or https:// URL, not '{}'",
                w.text
            ),
        ));
    }
    Ok(w.text.clone())
}

pub(super) fn bucket_url(d: &Directive) -> Result<BucketUrl, ConfigError> {
    let w = single(d)?;
    BucketUrl::parse(&w.text).map_err(|m| err(&w.pos, format!("{}: {m}", d.name.text)))
}

/// The single value as a path, relative ones taken from the configuration file's directory.
pub(super) fn file_path(base: &Path, d: &Directive) -> Result<PathBuf, ConfigError> {
    let p = Path::new(&single(d)?.text);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    })
}

/// A command line: several words, or one quoted string split by the configuration's quoting.
pub(super) fn command_words(d: &Directive) -> Result<Vec<String>, ConfigError> {
    match d.values.as_slice() {
        [] => Err(err(&d.name.pos, format!("{} needs a program", d.name.text))),
        [one] if one.text.contains(char::is_whitespace) => {
            super::syntax::split_words(&one.text).map_err(|m| err(&one.pos, m))
        }
        many => Ok(many.iter().map(|w| w.text.clone()).collect()),
    }
}

/// A database name (or `all`), as MySQL and PostgreSQL sets take it.
pub(super) fn database(directive: &str, w: &Word) -> Result<String, ConfigError> {
    let bad = w.text.is_empty() || w.text.contains('/') || w.text.starts_with('-');
    if bad {
        return Err(err(
            &w.pos,
            format!(
                "{directive} needs a database name (or 'all'), not '{}'",
                w.text
            ),
        ));
    }
    Ok(w.text.clone())
}
