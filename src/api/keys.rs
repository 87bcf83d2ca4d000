//! Reading the RSA keys users bring, in every format the AlipayHK portal and openssl hand out.
//!
//! Keys are *parsed* with the `rsa` crate (it reads PKCS#8, PKCS#1 and SPKI, PEM or DER) and then
//! handed to `aws-lc-rs` as DER, which does the signing and verification on the hot path: it is
//! ten times faster and constant time. Nothing in this module ever formats key bytes into a
//! message: errors name the file and the formats tried, never the content.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{self as lc, KeyPair as _};
use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};

/// Why a key could not be used. The text names the file and what was tried, never key bytes;
/// a "path" that is itself key material (a key pasted where a path belongs) is not shown.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {}", shown(path))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not a readable RSA {kind} key (tried {tried}); export it again from the \
         portal or convert it with openssl{hint}",
        shown(path)
    )]
    Unreadable {
        path: PathBuf,
        kind: &'static str,
        tried: &'static str,
        /// What the file's shape says went wrong (see [`shape_hint`]), or nothing.
        hint: &'static str,
    },
    #[error("{} holds {found}, not {wanted}: {hint}", shown(path))]
    WrongKind {
        path: PathBuf,
        found: &'static str,
        wanted: &'static str,
        hint: &'static str,
    },
    #[error(
        "{} is an encrypted (password-protected) private key; write an unencrypted copy that \
         only you can read: openssl pkcs8 -in KEY -out plain.pem && chmod 600 plain.pem",
        shown(path)
    )]
    Encrypted { path: PathBuf },
    #[error(
        "{}: the RSA key is {bits} bits; the gateway needs 2048 bits or more",
        shown(path)
    )]
    TooSmall { path: PathBuf, bits: usize },
    #[error("a key was given where the path of a key file belongs (the value is not shown)")]
    NotAPath,
}

/// Whether a setting's value is key material rather than a path: a PEM armour, a line break, or
/// a long run of base64 (the portal's bare key). Such a value is never shown.
pub fn looks_like_key_material(value: &str) -> bool {
    let v = value.trim();
    v.contains("-----BEGIN")
        || v.contains('\n')
        || (v.len() >= 200
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='))
}

/// A key file's path as messages show it: as it is, unless it is key material.
fn shown(path: &Path) -> String {
    let text = path.to_string_lossy();
    if looks_like_key_material(&text) {
        "(key material given as a path, not shown)".to_owned()
    } else {
        text.into_owned()
    }
}

const PRIVATE_FORMATS: &str =
    "PKCS#8 PEM, PKCS#1 PEM, bare base64 of PKCS#8 or PKCS#1 DER, PKCS#8 or PKCS#1 DER";
const PUBLIC_FORMATS: &str = "SPKI PEM (BEGIN PUBLIC KEY), PKCS#1 PEM (BEGIN RSA PUBLIC KEY), bare base64 of SPKI or PKCS#1 DER, DER";

/// Seeds this thread's random generator. aws-lc keeps one per thread and seeds it on first use
/// from CPU jitter, which takes milliseconds; signing draws from it (RSA blinding). Runtimes call
/// this as each thread starts, so that the first signature on a thread cannot stall a request
/// between its rate-limit slot and the gateway (a stall that let requests bunch up on arrival).
pub fn seed_thread_rng() {
    let mut byte = [0u8; 1];
    // A failure here only means the first real draw seeds instead.
    let _ = aws_lc_rs::rand::fill(&mut byte);
}

/// The client's private key, ready to sign. `Debug` never shows the key.
pub struct PrivateKey {
    pair: lc::RsaKeyPair,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKey(RSA-{}, redacted)",
            self.pair.public_modulus_len() * 8
        )
    }
}

/// A public key used to verify signatures (the gateway's for responses, the client's in the sandbox).
#[derive(Clone)]
pub struct PublicKey {
    /// The key parsed once from its PKCS#1 `RSAPublicKey` DER (which it keeps: `as_ref()`), so
    /// that verifying every answer does not parse the key again.
    parsed: lc::ParsedPublicKey,
}

impl PartialEq for PublicKey {
    /// The same RSA public key (modulus and exponent), whatever format each was read from.
    fn eq(&self, other: &Self) -> bool {
        self.parsed.as_ref() == other.parsed.as_ref()
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} bytes)", self.parsed.as_ref().len())
    }
}

impl PrivateKey {
    /// Reads a private key file in any supported format. Who may read it is
    /// `api::checks::key_permissions`, which `run` and `doctor` ask.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        if looks_like_key_material(&path.to_string_lossy()) {
            return Err(KeyError::NotAPath);
        }
        let bytes = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        if parse_private(&bytes).is_none() && parse_public(&bytes).is_some() {
            return Err(KeyError::WrongKind {
                path: path.to_owned(),
                found: "a public key",
                wanted: "your private key",
                hint: "private_key must be the private half of the key pair whose public half \
                       is uploaded in the AlipayHK portal (are private_key and \
                       alipay_public_key swapped?)",
            });
        }
        let unreadable = || KeyError::Unreadable {
            path: path.to_owned(),
            kind: "private",
            tried: PRIVATE_FORMATS,
            hint: shape_hint(&bytes),
        };
        if bytes.windows(9).any(|w| w == b"ENCRYPTED") {
            return Err(KeyError::Encrypted {
                path: path.to_owned(),
            });
        }
        let key = parse_private(&bytes).ok_or_else(unreadable)?;
        check_size(path, rsa::traits::PublicKeyParts::size(&key))?;
        Self::from_rsa(&key).ok_or_else(unreadable)
    }

    /// Parses a key from any supported format; `None` when no format fits.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::from_rsa(&parse_private(bytes)?)
    }

    fn from_rsa(key: &rsa::PrivateKey) -> Option<Self> {
        let der = key.to_pkcs8_der().ok()?;
        let pair = lc::RsaKeyPair::from_pkcs8(der.as_bytes()).ok()?;
        Some(Self { pair })
    }

    /// The size of the key (its modulus), in bits.
    pub fn bits(&self) -> usize {
        self.pair.public_modulus_len() * 8
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `content`.
    pub fn sign(&self, content: &[u8]) -> Vec<u8> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // Signing with a key that parsed can only fail on a wrong buffer length, which is sized above.
        self.pair
            .sign(&lc::RSA_PKCS1_SHA256, &rng, content, &mut sig)
            .expect("RSA signing with a valid key and a modulus-sized buffer");
        sig
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_pkcs1_der(self.pair.public_key().as_ref())
            .expect("the public half of a key pair that signs")
    }
}

impl PublicKey {
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        if looks_like_key_material(&path.to_string_lossy()) {
            return Err(KeyError::NotAPath);
        }
        let bytes = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        if parse_public(&bytes).is_none() && parse_private(&bytes).is_some() {
            return Err(KeyError::WrongKind {
                path: path.to_owned(),
                found: "a private key",
                wanted: "AlipayHK's public key",
                hint: "alipay_public_key must be the AlipayHK public key downloaded from the \
                       portal; a private key never goes there (are private_key and \
                       alipay_public_key swapped?)",
            });
        }
        let unreadable = || KeyError::Unreadable {
            path: path.to_owned(),
            kind: "public",
            tried: PUBLIC_FORMATS,
            hint: shape_hint(&bytes),
        };
        let key = parse_public(&bytes).ok_or_else(unreadable)?;
        // Checked here, or a short key would be reported as unreadable: the verifier refuses it.
        check_size(path, rsa::traits::PublicKeyParts::size(&key))?;
        Self::from_rsa(&key).ok_or_else(unreadable)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::from_rsa(&parse_public(bytes)?)
    }

    fn from_rsa(key: &rsa::PublicKey) -> Option<Self> {
        let der = key.to_pkcs1_der().ok()?;
        Self::from_pkcs1_der(der.as_bytes())
    }

    fn from_pkcs1_der(pkcs1_der: &[u8]) -> Option<Self> {
        let parsed = lc::ParsedPublicKey::new(&lc::RSA_PKCS1_2048_8192_SHA256, pkcs1_der).ok()?;
        Some(Self { parsed })
    }

    /// True when `signature` is a valid RSASSA-PKCS1-v1_5 SHA-256 signature of `content`.
    pub fn verify(&self, content: &[u8], signature: &[u8]) -> bool {
        self.parsed.verify_sig(content, signature).is_ok()
    }
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok().map(str::trim)
}

/// The DER inside a PEM armour or a bare base64 body (white space and line breaks allowed).
fn bare_base64(s: &str) -> Option<Vec<u8>> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

/// The DER inside a PEM armour read leniently: a key pasted without its line breaks (the whole
/// base64 on one line, or the armour and the body on one line), which strict PEM refuses.
fn pem_body(s: &str) -> Option<Vec<u8>> {
    let start = s.find("-----BEGIN")?;
    let after_begin = s[start + 10..].find("-----")? + start + 15;
    let end = s[after_begin..].find("-----END")? + after_begin;
    bare_base64(&s[after_begin..end])
}

fn parse_private(bytes: &[u8]) -> Option<rsa::PrivateKey> {
    parse_key(
        bytes,
        |s| {
            rsa::PrivateKey::from_pkcs8_pem(s)
                .or_else(|_| rsa::PrivateKey::from_pkcs1_pem(s))
                .ok()
        },
        private_from_der,
    )
}

/// A key in any of the forms users bring: PEM (strict, then with its line breaks lost), the
/// bare base64 of the DER, or the DER itself.
fn parse_key<K>(
    bytes: &[u8],
    from_pem: impl Fn(&str) -> Option<K>,
    from_der: impl Fn(&[u8]) -> Option<K>,
) -> Option<K> {
    if let Some(s) = text(bytes) {
        if s.contains("-----BEGIN") {
            return from_pem(s).or_else(|| from_der(&pem_body(s)?));
        }
        if let Some(der) = bare_base64(s) {
            return from_der(&der);
        }
    }
    from_der(bytes)
}

fn private_from_der(der: &[u8]) -> Option<rsa::PrivateKey> {
    rsa::PrivateKey::from_pkcs8_der(der)
        .or_else(|_| rsa::PrivateKey::from_pkcs1_der(der))
        .ok()
}

/// The gateway takes RSA keys of 2048 bits or more; `bytes` is the modulus size in bytes.
fn check_size(path: &Path, bytes: usize) -> Result<(), KeyError> {
    let bits = bytes * 8;
    if bits < 2048 {
        return Err(KeyError::TooSmall {
            path: path.to_owned(),
            bits,
        });
    }
    Ok(())
}

fn parse_public(bytes: &[u8]) -> Option<rsa::PublicKey> {
    parse_key(
        bytes,
        |s| {
            rsa::PublicKey::from_public_key_pem(s)
                .or_else(|_| rsa::PublicKey::from_pkcs1_pem(s))
                .ok()
        },
        public_from_der,
    )
}

fn public_from_der(der: &[u8]) -> Option<rsa::PublicKey> {
    rsa::PublicKey::from_public_key_der(der)
        .or_else(|_| rsa::PublicKey::from_pkcs1_der(der))
        .ok()
}

/// The format a key file is in, from its PEM label, for a person (`PKCS#8 PEM`); never its
/// content.
pub fn format_of(bytes: &[u8]) -> &'static str {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return "DER";
    };
    let label = text
        .split_once("-----BEGIN ")
        .and_then(|(_, rest)| rest.split_once("-----"))
        .map(|(label, _)| label);
    match label {
        Some("PRIVATE KEY") => "PKCS#8 PEM",
        Some("RSA PRIVATE KEY") => "PKCS#1 PEM",
        Some("ENCRYPTED PRIVATE KEY") => "encrypted PKCS#8 PEM",
        Some("PUBLIC KEY") => "SPKI PEM",
        Some("RSA PUBLIC KEY") => "PKCS#1 PEM",
        Some("CERTIFICATE") => CERTIFICATE,
        Some(_) => "PEM of another kind",
        None => "bare base64",
    }
}

const CERTIFICATE: &str = "an X.509 certificate";

/// The format of the key file at `path` ([`format_of`]); `None` when it cannot be read.
pub fn file_format(path: &Path) -> Option<&'static str> {
    std::fs::read(path).ok().map(|bytes| format_of(&bytes))
}

/// Why a key file that names a format still cannot be read, where its shape says so.
fn shape_hint(bytes: &[u8]) -> &'static str {
    if format_of(bytes) == CERTIFICATE {
        return "; it is a certificate: take the key out of it with \
                openssl x509 -in CERT -pubkey -noout > alipay_public.pem";
    }
    let text = String::from_utf8_lossy(bytes);
    let joined = text.contains("-----BEGIN")
        && text
            .lines()
            .any(|line| !line.starts_with("-----") && line.trim().len() > 76);
    if joined {
        return "; its base64 was pasted as one line, and a PEM key needs its line breaks: paste \
                it again as the portal shows it, or wrap it with fold -w 64";
    }
    ""
}

/// The files `keygen` writes, private key first of each pair.
pub const KEY_FILES: [&str; 4] = [
    "client_private.pem",
    "client_public.pem",
    "alipay_private.pem",
    "alipay_public.pem",
];

/// Writes a fresh RSA-2048 key pair for the client and one for the simulated gateway, as
/// `client_private.pem` (PKCS#8), `client_public.pem`, `alipay_private.pem`, `alipay_public.pem`
/// (SPKI). Generation uses `aws-lc-rs` (fast even in debug builds); encoding uses `rsa`. A key
/// file already in `dir` is never overwritten (a real key kept under that name would be lost):
/// see [`keygen_replacing`].
pub fn keygen(dir: &Path) -> anyhow::Result<()> {
    write_key_pairs(dir, false)
}

/// [`keygen`], replacing the key files already in `dir` (`keygen --force`).
pub fn keygen_replacing(dir: &Path) -> anyhow::Result<()> {
    write_key_pairs(dir, true)
}

fn write_key_pairs(dir: &Path, replace: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if !replace && let Some(there) = KEY_FILES.iter().map(|f| dir.join(f)).find(|p| p.exists()) {
        anyhow::bail!(
            "{} already exists: keygen does not overwrite a key file (a real key kept under that \
             name would be lost); choose an empty folder, or pass --force to replace the keys in \
             {}",
            there.display(),
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for pair in KEY_FILES.chunks(2) {
        let (private_pem, public_pem) = generate_pem_pair()?;
        write_key(&dir.join(pair[0]), private_pem.as_bytes(), replace, true)?;
        write_key(&dir.join(pair[1]), public_pem.as_bytes(), replace, false)?;
    }
    Ok(())
}

/// A fresh RSA-2048 pair as (PKCS#8 PEM, SPKI PEM).
pub fn generate_pem_pair() -> anyhow::Result<(String, String)> {
    use aws_lc_rs::encoding::AsDer as _;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
    let der = pair
        .as_der()
        .map_err(|_| anyhow::anyhow!("RSA key encoding failed"))?;
    let key = rsa::PrivateKey::from_pkcs8_der(der.as_ref())
        .map_err(|_| anyhow::anyhow!("RSA key re-encoding failed"))?;
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| anyhow::anyhow!("PEM encoding failed"))?;
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|_| anyhow::anyhow!("PEM encoding failed"))?;
    Ok((private_pem.to_string(), public_pem))
}

/// Writes a key file whole: a new file (refused when one is there, unless `replace`) renamed
/// into place, so that an existing key is never left half written. A private key is readable by
/// its owner only; a public one keeps the usual mode.
fn write_key(path: &Path, bytes: &[u8], replace: bool, private: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let cannot = || format!("cannot write {}", path.display());
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(folder).with_context(cannot)?;
    tmp.write_all(bytes).with_context(cannot)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // The temporary file is 0600; a public key is for anyone to read.
        if !private {
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
                .with_context(cannot)?;
        }
    }
    #[cfg(not(unix))]
    let _ = private;
    if replace {
        tmp.persist(path)
            .map_err(|e| e.error)
            .with_context(cannot)?;
    } else {
        tmp.persist_noclobber(path)
            .map_err(|e| e.error)
            .with_context(|| {
                format!(
                    "{} already exists: keygen does not overwrite it",
                    path.display()
                )
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/vectors")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn all_three_private_formats_give_the_same_key() {
        let a = PrivateKey::from_bytes(&vector("client_private_pkcs8.pem")).unwrap();
        let b = PrivateKey::from_bytes(&vector("client_private_pkcs1.pem")).unwrap();
        let c = PrivateKey::from_bytes(&vector("client_private_bare_base64.txt")).unwrap();
        let pk = PublicKey::from_bytes(&vector("client_public.pem")).unwrap();
        for k in [&a, &b, &c] {
            assert_eq!(k.public_key().parsed.as_ref(), pk.parsed.as_ref());
        }
    }

    #[test]
    fn a_key_pasted_without_its_line_breaks_is_read() {
        let pem = String::from_utf8(vector("client_private_pkcs8.pem")).unwrap();
        let lines: Vec<&str> = pem.lines().collect();
        let body: String = lines[1..lines.len() - 1].concat();
        let reference = PrivateKey::from_bytes(pem.as_bytes()).unwrap().public_key();
        for pasted in [
            format!("{}\n{body}\n{}\n", lines[0], lines[lines.len() - 1]),
            format!("{} {body} {}", lines[0], lines[lines.len() - 1]),
        ] {
            let key = PrivateKey::from_bytes(pasted.as_bytes()).unwrap();
            assert_eq!(key.public_key(), reference);
        }
        let public = String::from_utf8(vector("client_public.pem")).unwrap();
        let one_line: String = public.lines().collect::<Vec<_>>().join("");
        assert_eq!(
            PublicKey::from_bytes(one_line.as_bytes()).unwrap(),
            reference
        );
    }

    #[test]
    fn garbage_is_refused_naming_the_formats_without_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = PrivateKey::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("PKCS#8") && err.contains("PKCS#1"), "{err}");
        assert!(!err.contains("U0VDUkVU"), "{err}");
    }

    #[test]
    fn a_short_key_is_refused_with_its_size() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rsa1024_private.pem");
        let err = PrivateKey::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("1024 bits"), "{err}");
        // The gateway's public key too, rather than "cannot read".
        let short = parse_private(&std::fs::read(&path).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("alipay_public.pem");
        std::fs::write(
            &public,
            short
                .to_public_key()
                .to_public_key_pem(Default::default())
                .unwrap(),
        )
        .unwrap();
        let err = PublicKey::from_file(&public).unwrap_err().to_string();
        assert!(err.contains("1024 bits"), "{err}");
    }

    #[test]
    fn a_key_pasted_where_a_path_belongs_is_never_shown() {
        let pem = String::from_utf8(vector("client_private_pkcs8.pem")).unwrap();
        let bare = String::from_utf8(vector("client_private_bare_base64.txt")).unwrap();
        for pasted in [pem.as_str(), bare.trim()] {
            for err in [
                PrivateKey::from_file(Path::new(pasted))
                    .unwrap_err()
                    .to_string(),
                PublicKey::from_file(Path::new(pasted))
                    .unwrap_err()
                    .to_string(),
            ] {
                assert!(err.contains("not shown"), "{err}");
                for line in pem.lines().chain(bare.lines()) {
                    assert!(!err.contains(&line[..line.len().min(24)]), "{err}");
                }
            }
        }
    }

    #[test]
    fn swapped_halves_are_named() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path()).unwrap();
        let err = PrivateKey::from_file(&dir.path().join("client_public.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("holds a public key") && err.contains("swapped"),
            "{err}"
        );
        let err = PublicKey::from_file(&dir.path().join("client_private.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds a private key"), "{err}");
        let own = PrivateKey::from_file(&dir.path().join("client_private.pem")).unwrap();
        let public = PublicKey::from_file(&dir.path().join("client_public.pem")).unwrap();
        let alipay = PublicKey::from_file(&dir.path().join("alipay_public.pem")).unwrap();
        assert_eq!(own.public_key(), public);
        assert_ne!(own.public_key(), alipay);
    }

    #[test]
    fn keygen_writes_four_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path()).unwrap();
        let private = PrivateKey::from_file(&dir.path().join("client_private.pem")).unwrap();
        let public = PublicKey::from_file(&dir.path().join("client_public.pem")).unwrap();
        let sig = private.sign(b"hello");
        assert!(public.verify(b"hello", &sig));
        assert!(!public.verify(b"hellp", &sig));
        assert!(PublicKey::from_file(&dir.path().join("alipay_public.pem")).is_ok());
        assert!(PrivateKey::from_file(&dir.path().join("alipay_private.pem")).is_ok());
    }

    #[test]
    fn formats_are_named_from_the_label_and_a_joined_pem_is_spotted() {
        assert_eq!(
            format_of(b"-----BEGIN PRIVATE KEY-----\nAA\n"),
            "PKCS#8 PEM"
        );
        assert_eq!(
            format_of(b"-----BEGIN RSA PRIVATE KEY-----\n"),
            "PKCS#1 PEM"
        );
        assert_eq!(format_of(b"-----BEGIN PUBLIC KEY-----\n"), "SPKI PEM");
        assert_eq!(
            format_of(b"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"),
            "bare base64"
        );
        assert_eq!(format_of(b"\x30\x82\xff\x01"), "DER");
        let joined = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            "A".repeat(1600)
        );
        assert!(shape_hint(joined.as_bytes()).contains("fold -w 64"));
        let wrapped = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            "A".repeat(64)
        );
        assert_eq!(shape_hint(wrapped.as_bytes()), "");
        assert!(shape_hint(b"-----BEGIN CERTIFICATE-----\nAA\n").contains("x509"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("joined.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\n".to_owned()
                + &"A".repeat(1600)
                + "\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = PrivateKey::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("fold -w 64"), "{err}");
    }
}
