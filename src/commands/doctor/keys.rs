//! The two key files, each alone (readable, its format and size, the private one's permissions)
//! and as a pair (not swapped, `alipay_public_key` not the public half of `private_key`). Keys
//! are read by `api::keys` as a run reads them; the pair and the permissions are judged by
//! `api::checks`, as a run judges them.

use std::path::{Path, PathBuf};

use super::{Check, Group};
use crate::api::checks;
use crate::api::keys::{self as api_keys, KeyError, PrivateKey, PublicKey};
use crate::config::Layers;

/// What a key file holds.
enum KeyFile<K> {
    /// The kind of key the setting wants, loaded.
    Usable(K),
    /// The other kind: the setting names the wrong half of a pair.
    OtherKind,
    /// Nothing usable; the reason is shown.
    Unusable,
}

/// The keys' group; the keys when both are usable and not one pair.
pub fn checks(layers: &Layers) -> (Group, Option<(PrivateKey, PublicKey)>) {
    let mut group = Group::new("keys", "keys");
    let private_path = layers.optional("private_key").map(PathBuf::from);
    let public_path = layers.optional("alipay_public_key").map(PathBuf::from);
    let private = match &private_path {
        Some(path) => private_key(path, &mut group),
        None => {
            group.push(Check::skip("private_key", "not set (see settings)"));
            KeyFile::Unusable
        }
    };
    let public = match &public_path {
        Some(path) => alipay_public_key(path, &mut group),
        None => {
            group.push(Check::skip("alipay_public_key", "not set (see settings)"));
            KeyFile::Unusable
        }
    };
    let (Some(private_path), Some(public_path)) = (private_path, public_path) else {
        group.push(Check::skip("key pair", "needs both keys"));
        return (group, None);
    };
    let keys = match (private, public) {
        (KeyFile::Usable(private), KeyFile::Usable(public)) => {
            let found = checks::key_pair(&private, &public, &private_path, &public_path);
            let usable = found.level != checks::Level::Fail;
            group.push(Check::new("key pair", found));
            usable.then_some((private, public))
        }
        (KeyFile::OtherKind, KeyFile::OtherKind) => {
            group.push(Check::fail_with(
                "key pair",
                format!(
                    "swapped: private_key ({}) holds a public key and alipay_public_key ({}) a \
                     private key",
                    private_path.display(),
                    public_path.display()
                ),
                "exchange the two settings",
            ));
            None
        }
        _ => {
            group.push(Check::skip("key pair", "needs both keys"));
            None
        }
    };
    (group, keys)
}

fn private_key(path: &Path, group: &mut Group) -> KeyFile<PrivateKey> {
    let file = key_file(
        "private_key",
        PrivateKey::from_file(path),
        path,
        group,
        |k| format!("RSA-{} private key", k.bits()),
    );
    // Only a private key's permissions matter; a public key in its place gets no word on them.
    if !matches!(file, KeyFile::OtherKind)
        && let Some(found) = checks::key_permissions(path)
    {
        group.push(Check::new("permissions", found));
    }
    file
}

fn alipay_public_key(path: &Path, group: &mut Group) -> KeyFile<PublicKey> {
    key_file(
        "alipay_public_key",
        PublicKey::from_file(path),
        path,
        group,
        |_| "RSA public key".to_owned(),
    )
}

/// One key setting's check, from what reading it as a run reads it gave.
fn key_file<K>(
    name: &str,
    read: Result<K, KeyError>,
    path: &Path,
    group: &mut Group,
    describe: impl Fn(&K) -> String,
) -> KeyFile<K> {
    match read {
        Ok(key) => {
            let format = api_keys::file_format(path).unwrap_or("unknown format");
            group.push(Check::ok(
                name,
                format!("{}: {}, {format}", path.display(), describe(&key)),
            ));
            KeyFile::Usable(key)
        }
        Err(e @ KeyError::WrongKind { .. }) => {
            group.push(Check::fail(name, e.to_string()));
            KeyFile::OtherKind
        }
        Err(KeyError::Io { source, .. }) => {
            group.push(Check::fail_with(
                name,
                format!("cannot read {}: {source}", path.display()),
                format!("check the path in setting {name}"),
            ));
            KeyFile::Unusable
        }
        Err(e) => {
            group.push(Check::fail(name, e.to_string()));
            KeyFile::Unusable
        }
    }
}
