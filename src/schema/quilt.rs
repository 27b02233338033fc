//! The quilt's stored format: file content shared by runs and hosts, stored once.
//!
//! A quilted run's tar archive holds every member as usual, except that the data of a regular
//! file at or above `QuiltMinSize` is left out: its member has size 0 and a PAX header whose
//! `S3NAP.quilt.*` records name the content object, the file's size and its SHA-256
//! ([`QuiltRef`]). The content object is `OpenPGP(zstd(file))` under
//! `quilt/content/<HMAC>.zst.gpg`, where the HMAC-SHA-256 is keyed with the quilt secret and
//! covers the fingerprints of the (sub)keys the content is encrypted to and its SHA-256
//! ([`QuiltSecret::content_key`]): the bucket shows no plaintext hash, and content encrypted to
//! other keys (other recipients, or a rotated encryption subkey) is never reused.
//!
//! The secret itself never reaches the store. `quilt/secret.id` holds its fingerprint (an HMAC
//! of a fixed text), so a host configured with another secret is refused instead of filling the
//! quilt with content nobody else finds. `quilt` is a name no `Host` can take
//! (`layout::check_host`).
//!
//! The run's manifest (format [`QUILTED_FORMAT`]) lists every content key its archive references
//! ([`QuiltUse`]), so gc and verify read references without any key. The file SHA-256s stay
//! inside the encrypted archive; recovery checks each spliced file against its record.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::FormatError;

/// Everything of the quilt lives under this prefix of the store's root.
pub const QUILT_PREFIX: &str = "quilt/";
/// The host name the quilt's prefix takes.
pub const QUILT_HOST: &str = "quilt";
/// Content objects: `quilt/content/<64 hex digits>.zst.gpg`.
pub const CONTENT_PREFIX: &str = "quilt/content/";
pub const CONTENT_SUFFIX: &str = ".zst.gpg";
/// The quilt secret's fingerprint (one line of hex).
pub const SECRET_ID_KEY: &str = "quilt/secret.id";
/// The manifest format of a quilted run. An s3nap that does not know it refuses the manifest,
/// so it never "recovers" reference placeholders as files.
pub const QUILTED_FORMAT: u32 = 3;
/// Default `QuiltMinSize`.
pub const DEFAULT_MIN_SIZE: u64 = 64 << 10;

/// PAX records of a quilted member.
pub const PAX_KEY: &str = "S3NAP.quilt.key";
pub const PAX_SIZE: &str = "S3NAP.quilt.size";
pub const PAX_SHA256: &str = "S3NAP.quilt.sha256";
/// Every quilt record starts with this; the recovery splicer drops them all.
pub const PAX_PREFIX: &str = "S3NAP.quilt.";

/// Bytes of a quilt secret.
pub const SECRET_LEN: usize = 32;

/// The quilt secret, as `QuiltKeyFile` holds it: 64 hex digits on one line. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct QuiltSecret([u8; SECRET_LEN]);

impl std::fmt::Debug for QuiltSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuiltSecret(…)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl QuiltSecret {
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        QuiltSecret(bytes)
    }

    /// Parses a key file's text; the error never quotes the text.
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let line = text.trim();
        let mut bytes = [0u8; SECRET_LEN];
        hex::decode_to_slice(line, &mut bytes).map_err(|_| {
            FormatError(format!(
                "a quilt key file holds {} hex digits on one line (as `s3nap quilt init` \
                 writes it)",
                2 * SECRET_LEN
            ))
        })?;
        Ok(QuiltSecret(bytes))
    }

    /// The key file's text.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", hex::encode(self.0))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    /// What the bucket keeps of the secret (`quilt/secret.id`): a one-way HMAC of a fixed text.
    pub fn fingerprint(&self) -> String {
        let mut mac = self.mac();
        mac.update(b"s3nap quilt secret fingerprint v1");
        hex::encode(mac.finalize().into_bytes())
    }

    /// The content key of a file whose SHA-256 is `sha256`, encrypted to `recipients`: the
    /// fingerprints of the keys it is encrypted to (`keys::encryption_fingerprints`, the
    /// Sealer's choice, not the certificates' primary fingerprints), in any order: the set is
    /// what counts.
    pub fn content_key(&self, recipients: &[String], sha256: &[u8; 32]) -> String {
        let mut sorted: Vec<String> = recipients.iter().map(|r| r.to_ascii_uppercase()).collect();
        sorted.sort();
        sorted.dedup();
        let mut mac = self.mac();
        mac.update(b"s3nap quilt content v1\0");
        mac.update(&(sorted.len() as u64).to_be_bytes());
        for r in &sorted {
            mac.update(&(r.len() as u64).to_be_bytes());
            mac.update(r.as_bytes());
        }
        mac.update(sha256);
        format!(
            "{CONTENT_PREFIX}{}{CONTENT_SUFFIX}",
            hex::encode(mac.finalize().into_bytes())
        )
    }
}

/// Whether `key` (relative to the store's root) names a content object.
pub fn is_content_key(key: &str) -> bool {
    key.strip_prefix(CONTENT_PREFIX)
        .and_then(|rest| rest.strip_suffix(CONTENT_SUFFIX))
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A quilted member's reference to its content, as its PAX records carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuiltRef {
    /// The content object's key, relative to the store's root.
    pub key: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The file's SHA-256.
    pub sha256: [u8; 32],
}

impl QuiltRef {
    /// The PAX records that stand for the member's data.
    pub fn pax_records(&self) -> Vec<(String, Vec<u8>)> {
        vec![
            (PAX_KEY.to_string(), self.key.clone().into_bytes()),
            (PAX_SIZE.to_string(), self.size.to_string().into_bytes()),
            (
                PAX_SHA256.to_string(),
                hex::encode(self.sha256).into_bytes(),
            ),
        ]
    }

    /// The reference among a member's PAX records: `None` when it has none (an ordinary
    /// member), an error when the records are there but incomplete or malformed.
    pub fn from_pax<'a>(
        records: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Option<Result<QuiltRef, FormatError>> {
        let (mut key, mut size, mut sha256) = (None, None, None);
        let mut any = false;
        for (name, value) in records {
            if !name.starts_with(PAX_PREFIX) {
                continue;
            }
            any = true;
            let value = String::from_utf8_lossy(value).into_owned();
            match name {
                PAX_KEY => key = Some(value),
                PAX_SIZE => size = Some(value),
                PAX_SHA256 => sha256 = Some(value),
                _ => {}
            }
        }
        if !any {
            return None;
        }
        Some((|| {
            let bad = |what: &str| FormatError(format!("quilt reference: {what}"));
            let key = key.ok_or_else(|| bad("no content key"))?;
            if !is_content_key(&key) {
                return Err(bad(&format!("'{key}' is not a content key")));
            }
            let size = size
                .ok_or_else(|| bad("no size"))?
                .parse::<u64>()
                .map_err(|_| bad("size is not a number"))?;
            let mut digest = [0u8; 32];
            hex::decode_to_slice(sha256.ok_or_else(|| bad("no SHA-256"))?, &mut digest)
                .map_err(|_| bad("SHA-256 is not 64 hex digits"))?;
            Ok(QuiltRef {
                key,
                size,
                sha256: digest,
            })
        })())
    }
}

/// What a quilted run's manifest records of the quilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuiltUse {
    /// The fingerprint of the secret the content keys were made with.
    pub fingerprint: String,
    /// Files at or above this size were quilted.
    pub min_size: u64,
    /// Every content key the archive references, sorted, each once.
    pub content: Vec<String>,
    /// Content objects this run uploaded, and their stored bytes.
    #[serde(default)]
    pub uploaded: u64,
    #[serde(default)]
    pub uploaded_bytes: u64,
    /// Quilted files whose content was already stored.
    #[serde(default)]
    pub reused: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> QuiltSecret {
        QuiltSecret::from_bytes([b; SECRET_LEN])
    }

    #[test]
    fn content_keys_depend_on_secret_recipients_and_content_only() {
        let a = ["AAAA".to_string(), "BBBB".to_string()];
        let b = ["bbbb".to_string(), "aaaa".to_string(), "AAAA".to_string()];
        let k = secret(1).content_key(&a, &[7; 32]);
        assert!(is_content_key(&k), "{k}");
        // The recipient set, in any order or case, gives the same key.
        assert_eq!(k, secret(1).content_key(&b, &[7; 32]));
        assert_ne!(k, secret(2).content_key(&a, &[7; 32]));
        assert_ne!(k, secret(1).content_key(&a[..1], &[7; 32]));
        assert_ne!(k, secret(1).content_key(&a, &[8; 32]));
        // The key reveals neither the content hash nor the secret.
        assert!(!k.contains(&hex::encode([7u8; 32])));
        assert_ne!(secret(1).fingerprint(), secret(2).fingerprint());
        assert!(!secret(1).fingerprint().contains(&hex::encode([1u8; 32])));
    }

    #[test]
    fn a_key_file_round_trips_and_bad_ones_are_refused_without_quoting_them() {
        let s = secret(9);
        assert_eq!(QuiltSecret::parse(&s.to_file_text()).unwrap(), s);
        let err = QuiltSecret::parse("0909 not hex").unwrap_err().to_string();
        assert!(!err.contains("0909"), "{err}");
        assert!(QuiltSecret::parse(&"09".repeat(31)).is_err());
        assert_eq!(format!("{s:?}"), "QuiltSecret(…)");
    }

    #[test]
    fn references_round_trip_through_pax_records_and_bad_ones_are_errors() {
        let r = QuiltRef {
            key: secret(1).content_key(&["AA".into()], &[3; 32]),
            size: 30 << 20,
            sha256: [3; 32],
        };
        let records = r.pax_records();
        let view = || records.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        assert_eq!(QuiltRef::from_pax(view()).unwrap().unwrap(), r);
        let other = [("SCHILY.xattr.user.a", b"x".as_slice())];
        assert!(QuiltRef::from_pax(other).is_none());
        let partial = [(PAX_KEY, r.key.as_bytes())];
        assert!(QuiltRef::from_pax(partial).unwrap().is_err());
        let digest = hex::encode([3u8; 32]);
        let foreign = [
            (PAX_KEY, b"web1/dir/etc/x.full.tar.zst.gpg".as_slice()),
            (PAX_SIZE, b"1".as_slice()),
            (PAX_SHA256, digest.as_bytes()),
        ];
        let err = QuiltRef::from_pax(foreign).unwrap().unwrap_err();
        assert!(err.to_string().contains("not a content key"), "{err}");
    }
}
