//! The compression layer as configured and as the manifest names it (`zstd:3`, `xz:6`,
//! `none`); the stage that applies it is `pipeline::compress`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd { level: i32 },
    Xz { level: u32 },
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd { level: 3 }
    }
}

impl Compression {
    /// `zstd[:LEVEL]`, `xz[:LEVEL]` or `none`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, level) = match text.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (text, None),
        };
        let level_num =
            |range: std::ops::RangeInclusive<i64>, default: i64| -> Result<i64, String> {
                let Some(l) = level else { return Ok(default) };
                let n: i64 = l
                    .parse()
                    .map_err(|_| format!("compression level '{l}' is not a number"))?;
                if !range.contains(&n) {
                    return Err(format!(
                        "compression level {n} is outside {}..={}",
                        range.start(),
                        range.end()
                    ));
                }
                Ok(n)
            };
        match name.to_ascii_lowercase().as_str() {
            "zstd" => Ok(Compression::Zstd {
                level: level_num(1..=22, 3)? as i32,
            }),
            "xz" => Ok(Compression::Xz {
                level: level_num(0..=9, 6)? as u32,
            }),
            "none" if level.is_none() => Ok(Compression::None),
            _ => Err(format!(
                "unknown compression '{text}' (expected zstd[:LEVEL], xz[:LEVEL] or none)"
            )),
        }
    }

    /// The layer's file name extension, if it adds one.
    pub fn extension(&self) -> Option<&'static str> {
        match self {
            Compression::Zstd { .. } => Some("zst"),
            Compression::Xz { .. } => Some("xz"),
            Compression::None => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
            Compression::Xz { level } => write!(f, "xz:{level}"),
            Compression::None => write!(f, "none"),
        }
    }
}
