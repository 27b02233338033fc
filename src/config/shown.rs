//! What `config check` shows of each run setting, one function per directive the table
//! ([`super::directives`]) points to. Secrets never pass: the S3 secret key appears as `****`,
//! the access key id shortened, NotifyCommand's arguments counted.

use super::{Config, StoreSpec};

/// `ABCD…WXYZ`: enough to recognise a key, too little to use it.
fn mask(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 8 {
        return "****".into();
    }
    format!(
        "{}…{}",
        chars[..4].iter().collect::<String>(),
        chars[chars.len() - 4..].iter().collect::<String>()
    )
}

pub(super) fn store(config: &Config) -> Option<String> {
    Some(match &config.store {
        StoreSpec::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        StoreSpec::Local(p) => format!("{} (local directory store)", p.display()),
    })
}

/// The key file with the access key id masked; the secret is never read out.
pub(super) fn keyfile(config: &Config) -> Option<String> {
    Some(match &config.s3.keyfile {
        Some(path) => keyfile_text(path),
        None => "none: the AWS credential chain".into(),
    })
}

/// ServerSideEncryption with its KmsKeyId.
pub(super) fn encryption(config: &Config) -> Option<String> {
    use crate::store::s3::Encryption;
    Some(match &config.s3.encryption {
        None => "none: the bucket's default".into(),
        Some(Encryption::Aes256) => "AES256".into(),
        Some(Encryption::Kms { key_id: None }) => "aws:kms (the account's aws/s3 key)".into(),
        Some(Encryption::Kms { key_id: Some(id) }) => format!("aws:kms, key {id}"),
    })
}

/// PruneKeyfile as S3Keyfile is shown.
pub(super) fn prune_keyfile(config: &Config) -> Option<String> {
    Some(match &config.s3.prune_keyfile {
        Some(path) => keyfile_text(path),
        None => "none: deletions use S3Keyfile's credentials".into(),
    })
}

fn keyfile_text(path: &std::path::Path) -> String {
    let keys = std::fs::read_to_string(path)
        .map_err(anyhow::Error::from)
        .and_then(|t| crate::store::s3::parse_keyfile(path, &t));
    match keys {
        Ok(k) => format!(
            "{} (access key {}, secret ****)",
            path.display(),
            mask(&k.access_key)
        ),
        Err(e) => format!("{} (unreadable: {e})", path.display()),
    }
}

pub(super) fn recipients(config: &Config) -> Option<String> {
    Some(if config.recipients.is_empty() {
        "none: archives are NOT encrypted".into()
    } else {
        config.recipients.join(", ")
    })
}

pub(super) fn keyring(config: &Config) -> Option<String> {
    Some(
        config
            .keyring
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none: gpg --export".into()),
    )
}

/// Where log lines go: LogConfig, or LogFile and LogLevel, and Syslog.
pub(super) fn logging(config: &Config) -> Option<String> {
    let log = &config.log;
    let level = log.level.unwrap_or(log::LevelFilter::Info);
    let main = match (&log.config_file, &log.file) {
        (Some(c), _) => format!("LogConfig {}", c.display()),
        (None, Some(f)) => format!("LogFile {} at {level}", f.display()),
        (None, None) => format!("stderr at {level}"),
    };
    let syslog = match &log.syslog {
        Some(s) => format!(
            ", syslog {} (facility {}, tag {})",
            s.socket.display(),
            s.facility,
            s.tag
        ),
        None => String::new(),
    };
    Some(main + &syslog)
}

/// The program only: arguments often carry a webhook token or a mail password.
pub(super) fn notify(config: &Config) -> Option<String> {
    let (program, args) = config.notify.split_first()?;
    Some(match args.len() {
        0 => program.clone(),
        n => format!("{program} and {n} argument(s), not shown (****)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_only_the_ends_of_long_keys() {
        assert_eq!(mask("AKIAIOSFODNN7EXAMPLE"), "AKIA…MPLE");
        assert_eq!(mask("short"), "****");
        assert_eq!(mask("12345678"), "****");
    }
}
