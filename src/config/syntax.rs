//! Configuration text → syntax tree with positions.
//!
//! The language is the Apache-style format s3napback read through Config::ApacheFormat:
//! `#` comment lines, `\` continuation, blank lines, `Name value…` directives, `<Name args>` …
//! `</Name>` blocks (nested), `'`/`"` quoting with backslash escapes. s3nap also accepts a
//! trailing `# comment` after whitespace. This layer knows nothing about which directives exist:
//! it only turns text into [`Item`]s that remember `file:line:column`, so the resolution step can
//! point at the exact place of every mistake. Reading files (and `Include`) lives in `load`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nom::branch::alt;
use nom::bytes::complete::{take_while, take_while1};
use nom::character::complete::{anychar, char, satisfy};
use nom::combinator::{map, recognize, value};
use nom::multi::many0;
use nom::sequence::{delimited, preceded};
use nom::{IResult, Parser};

/// Where something was written: file, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: Arc<Path>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A syntax or semantic error at a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct ConfigError {
    pub pos: Pos,
    pub message: String,
}

impl ConfigError {
    pub fn new(pos: &Pos, message: impl Into<String>) -> Self {
        ConfigError {
            pos: pos.clone(),
            message: message.into(),
        }
    }
}

/// One word of a directive or block header, unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// As written; compare with `eq_ignore_ascii_case`.
    pub name: Word,
    pub values: Vec<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub name: Word,
    pub args: Vec<Word>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Directive(Directive),
    Block(Block),
}

/// Blocks open at a point of the text, innermost last, each with the items read so far inside
/// it; the bottom entry is the file's top level.
type OpenBlocks = Vec<(Option<Block>, Vec<Item>)>;

/// Parses one file's text. Pure: no file system access, `Include` stays a plain directive.
pub fn parse_str(file: &Path, text: &str) -> Result<Vec<Item>, ConfigError> {
    let file: Arc<Path> = Arc::from(file);
    let mut stack: OpenBlocks = vec![(None, Vec::new())];
    for line in logical_lines(text) {
        let at = |offset: usize| line.pos(&file, offset);
        let body = line.text.trim_end();
        let start = body.len() - body.trim_start().len();
        let body_trim = &body[start..];
        if body_trim.is_empty() || body_trim.starts_with('#') {
            continue;
        }
        if let Some(rest) = body_trim.strip_prefix("</") {
            close_block(&mut stack, rest, &at(start))?;
        } else if let Some(rest) = body_trim.strip_prefix('<') {
            stack.push((Some(open_block(rest, start, &at)?), Vec::new()));
        } else {
            let mut words = tokenize(body_trim, start, &at)?.into_iter();
            let name = words.next().expect("non-empty line has a word");
            stack
                .last_mut()
                .expect("stack never empty")
                .1
                .push(Item::Directive(Directive {
                    name,
                    values: words.collect(),
                }));
        }
    }
    let (open, items) = stack.pop().expect("stack never empty");
    if let Some(block) = open {
        return Err(ConfigError::new(
            &block.name.pos,
            format!("<{}> is never closed", block.name.text),
        ));
    }
    Ok(items)
}

/// The header `<Name args>` whose text after `<` is `rest`, `start` the offset of its `<`.
fn open_block(rest: &str, start: usize, at: &dyn Fn(usize) -> Pos) -> Result<Block, ConfigError> {
    let words = tokenize(rest, start + 1, at)?;
    let (words, closed) = strip_block_close(words);
    if !closed {
        return Err(ConfigError::new(&at(start), "block header without '>'"));
    }
    let mut words = words.into_iter();
    let Some(name) = words.next() else {
        return Err(ConfigError::new(&at(start), "block without a name"));
    };
    Ok(Block {
        name,
        args: words.collect(),
        items: Vec::new(),
    })
}

/// Closes the innermost open block with `</Name>` (`rest` follows the `</`, written at `pos`),
/// adding it to the items of the block around it.
fn close_block(stack: &mut OpenBlocks, rest: &str, pos: &Pos) -> Result<(), ConfigError> {
    let close = strip_trailing_comment(rest);
    let Some(name) = close.trim_end().strip_suffix('>') else {
        return Err(ConfigError::new(pos, "closing tag without '>'"));
    };
    let name = name.trim();
    let (open, items) = stack.pop().expect("stack never empty");
    let Some(mut block) = open else {
        return Err(ConfigError::new(
            pos,
            format!("</{name}> closes a block that was never opened"),
        ));
    };
    if !block.name.text.eq_ignore_ascii_case(name) {
        return Err(ConfigError::new(
            pos,
            format!(
                "</{name}> does not match <{}> opened at {}",
                block.name.text, block.name.pos
            ),
        ));
    }
    block.items = items;
    stack
        .last_mut()
        .expect("block had a parent")
        .1
        .push(Item::Block(block));
    Ok(())
}

/// A line after joining `\` continuations, with a map back to physical positions.
struct LogicalLine {
    text: String,
    /// (offset in `text`, physical line number, byte column of that offset in the line)
    segments: Vec<(usize, usize, usize)>,
}

impl LogicalLine {
    fn pos(&self, file: &Arc<Path>, offset: usize) -> Pos {
        let (seg_off, line, col) = self
            .segments
            .iter()
            .rev()
            .find(|(o, _, _)| *o <= offset)
            .copied()
            .unwrap_or((0, 1, 0));
        Pos {
            file: file.clone(),
            line,
            column: col + (offset - seg_off) + 1,
        }
    }
}

fn logical_lines(text: &str) -> Vec<LogicalLine> {
    let mut out = Vec::new();
    let mut current: Option<LogicalLine> = None;
    for (index, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let line_no = index + 1;
        let (content, continues) = match raw.trim_end().strip_suffix('\\') {
            Some(head) => (head, true),
            None => (raw, false),
        };
        let logical = current.get_or_insert_with(|| LogicalLine {
            text: String::new(),
            segments: Vec::new(),
        });
        logical.segments.push((logical.text.len(), line_no, 0));
        logical.text.push_str(content);
        if continues {
            // A space keeps words on both sides of the break apart, as Config::ApacheFormat did.
            logical.text.push(' ');
        } else {
            out.push(current.take().expect("just inserted"));
        }
    }
    if let Some(last) = current {
        out.push(last);
    }
    out
}

fn strip_trailing_comment(s: &str) -> &str {
    match s.find(" #").or_else(|| s.find("\t#")) {
        Some(i) => &s[..i],
        None => s,
    }
}

/// Removes the `>` that ends a block header (it may be glued to the last word or stand alone).
fn strip_block_close(mut words: Vec<Word>) -> (Vec<Word>, bool) {
    let Some(last) = words.last_mut() else {
        return (words, false);
    };
    if last.text == ">" {
        words.pop();
        return (words, true);
    }
    if let Some(head) = last.text.strip_suffix('>') {
        last.text = head.to_string();
        if last.text.is_empty() {
            words.pop();
        }
        return (words, true);
    }
    (words, false)
}

#[derive(Clone)]
enum Tok {
    Word(String),
    Comment,
}

fn quoted(q: char) -> impl FnMut(&str) -> IResult<&str, String> {
    move |input| {
        delimited(
            char(q),
            map(
                many0(alt((
                    preceded(char('\\'), anychar),
                    satisfy(move |c| c != q),
                ))),
                |chars: Vec<char>| chars.into_iter().collect::<String>(),
            ),
            char(q),
        )
        .parse(input)
    }
}

fn token(input: &str) -> IResult<&str, Tok> {
    alt((
        value(
            Tok::Comment,
            recognize(preceded(char('#'), take_while(|_| true))),
        ),
        map(quoted('"'), Tok::Word),
        map(quoted('\''), Tok::Word),
        map(take_while1(|c: char| !c.is_whitespace()), |s: &str| {
            Tok::Word(s.to_string())
        }),
    ))
    .parse(input)
}

fn tokenize(text: &str, base: usize, at: &dyn Fn(usize) -> Pos) -> Result<Vec<Word>, ConfigError> {
    let mut words = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(words);
        }
        let offset = base + (text.len() - rest.len());
        if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            // Without this, an unclosed quote would fall through to a bare word.
            if quoted(q)(rest).is_err() {
                return Err(ConfigError::new(&at(offset), "unterminated quoted string"));
            }
        }
        let (next, tok) =
            token(rest).map_err(|_| ConfigError::new(&at(offset), "cannot read this value"))?;
        match tok {
            Tok::Comment => return Ok(words),
            Tok::Word(text) => words.push(Word {
                text,
                pos: at(offset),
            }),
        }
        rest = next;
    }
}

/// Splits a command line written as one quoted value (`"mail -s 'backup report' root"`) into
/// words by the configuration's own quoting rules; no shell is involved.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let file: Arc<Path> = Arc::from(Path::new("-"));
    let at = |offset: usize| Pos {
        file: file.clone(),
        line: 1,
        column: offset + 1,
    };
    tokenize(text, 0, &at)
        .map(|words| words.into_iter().map(|w| w.text).collect())
        .map_err(|e| format!("column {}: {}", e.pos.column, e.message))
}

/// A configuration file on disk, with the path it was read from.
pub fn parse_file(path: &Path) -> Result<Vec<Item>, ConfigError> {
    let text = std::fs::read(path).map_err(|e| ConfigError {
        pos: Pos {
            file: Arc::from(path),
            line: 0,
            column: 0,
        },
        message: format!("cannot read configuration: {e}"),
    })?;
    let text = String::from_utf8(text).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let column = valid.len() - valid.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1) + 1;
        ConfigError {
            pos: Pos {
                file: Arc::from(path),
                line,
                column,
            },
            message: "configuration is not valid UTF-8".into(),
        }
    })?;
    parse_str(path, &text)
}

/// Parses `path` and splices in every `Include FILE|DIR` (relative to the including file; a
/// directory includes its files in name order).
pub fn load(path: &Path) -> Result<Vec<Item>, ConfigError> {
    let mut seen = Vec::new();
    load_inner(path, &mut seen)
}

fn load_inner(path: &Path, seen: &mut Vec<PathBuf>) -> Result<Vec<Item>, ConfigError> {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    seen.push(canonical);
    let items = parse_file(path)?;
    let items = expand_includes(items, path, seen)?;
    seen.pop();
    Ok(items)
}

fn expand_includes(
    items: Vec<Item>,
    path: &Path,
    seen: &mut Vec<PathBuf>,
) -> Result<Vec<Item>, ConfigError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Directive(d) if d.name.text.eq_ignore_ascii_case("include") => {
                let [target] = d.values.as_slice() else {
                    return Err(ConfigError::new(
                        &d.name.pos,
                        "Include takes exactly one file or directory",
                    ));
                };
                let base = path.parent().unwrap_or(Path::new("."));
                let target_path = base.join(&target.text);
                let mut files = Vec::new();
                if target_path.is_dir() {
                    let entries = std::fs::read_dir(&target_path).map_err(|e| {
                        ConfigError::new(
                            &target.pos,
                            format!("cannot read {}: {e}", target_path.display()),
                        )
                    })?;
                    for entry in entries.flatten() {
                        if entry.path().is_file() {
                            files.push(entry.path());
                        }
                    }
                    files.sort();
                } else if target_path.is_file() {
                    files.push(target_path);
                } else {
                    return Err(ConfigError::new(
                        &target.pos,
                        format!("Include: {} does not exist", target_path.display()),
                    ));
                }
                for file in files {
                    let canonical = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
                    if seen.contains(&canonical) {
                        return Err(ConfigError::new(
                            &target.pos,
                            format!("Include loop through {}", file.display()),
                        ));
                    }
                    out.extend(load_inner(&file, seen)?);
                }
            }
            Item::Block(mut b) => {
                b.items = expand_includes(b.items, path, seen)?;
                out.push(Item::Block(b));
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Item>, ConfigError> {
        parse_str(Path::new("t.conf"), text)
    }

    fn directive(item: &Item) -> (&str, Vec<&str>) {
        match item {
            Item::Directive(d) => (
                d.name.text.as_str(),
                d.values.iter().map(|w| w.text.as_str()).collect(),
            ),
            Item::Block(b) => panic!("expected a directive, got block {}", b.name.text),
        }
    }

    #[test]
    fn directives_quotes_comments_and_continuations() {
        let items = parse(
            "# comment\n\nBucket  my-bucket  # trailing\nExclude \"/a b\" 'c\\'d' x#y\nLong one \\\n  two\n",
        )
        .unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(directive(&items[0]), ("Bucket", vec!["my-bucket"]));
        assert_eq!(
            directive(&items[1]),
            ("Exclude", vec!["/a b", "c'd", "x#y"])
        );
        assert_eq!(directive(&items[2]), ("Long", vec!["one", "two"]));
        let Item::Directive(d) = &items[2] else {
            unreachable!()
        };
        assert_eq!((d.values[1].pos.line, d.values[1].pos.column), (6, 3));
    }

    #[test]
    fn nested_blocks_keep_positions() {
        let items = parse("<Cycle daily>\n  Frequency 1\n  <Directory /home/x>\n    Exclude /home/x/y\n  </Directory>\n</cycle>\n").unwrap();
        let Item::Block(cycle) = &items[0] else {
            panic!()
        };
        assert_eq!(cycle.name.text, "Cycle");
        assert_eq!(cycle.args[0].text, "daily");
        let Item::Block(dir) = &cycle.items[1] else {
            panic!()
        };
        assert_eq!(dir.args[0].text, "/home/x");
        assert_eq!(dir.name.pos.line, 3);
        assert_eq!(dir.name.pos.column, 4);
    }

    #[test]
    fn structural_errors_name_the_place() {
        let cases = [
            ("<Cycle a>\nFrequency 1\n", 1, "never closed"),
            ("</Cycle>\n", 1, "never opened"),
            ("<Cycle a>\n</Directory>\n", 2, "does not match"),
            ("Exclude \"/unterminated\n", 1, "unterminated"),
            ("<Cycle a\n</Cycle>\n", 1, "without '>'"),
        ];
        for (text, line, needle) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.pos.line, line, "{text:?}: {err}");
            assert!(err.message.contains(needle), "{text:?}: {err}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Any text at all: an error or a tree, never a panic.
        #[test]
        fn never_panics_on_arbitrary_text(text in ".{0,400}") {
            let _ = parse(&text);
        }

        /// Text built from the language's own pieces reaches the deeper paths.
        #[test]
        fn never_panics_on_config_like_text(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "<", ">", "</", "Cycle", "Directory", " ", "\t", "\n", "\\\n", "\"", "'",
                    "#", "\\", "/etc", "x", "é", "\r\n", "<Cycle a>", "</Cycle>", "Exclude",
                ]),
                0..80,
            )
        ) {
            let text: String = pieces.concat();
            if let Ok(items) = parse(&text) {
                // Whatever parses also resolves without panicking.
                let _ = crate::config::resolve::resolve(Path::new("t.conf"), &items);
            }
        }
    }
}
