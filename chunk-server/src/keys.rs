//! Release signing keys: minisign key pairs in the files `minisign -G` writes, so keys made
//! by the stock tool work here and our signatures verify with `minisign -Vm`.

use std::path::{Path, PathBuf};

use base64::Engine;
use minisign::{KeyPair, PublicKey, SecretKey, SecretKeyBox};

use diffota_format::signature::signature_path;

use crate::fsutil::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: already exists (pass --force to replace it)")]
    Exists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a minisign secret key")]
    BadSecretKey {
        path: PathBuf,
        #[source]
        problem: SecretKeyProblem,
    },
    #[error("{path}: wrong password or corrupt key")]
    WrongPassword { path: PathBuf },
    #[error("minisign: {doing}")]
    Minisign {
        doing: &'static str,
        #[source]
        source: minisign::PError,
    },
    #[error(transparent)]
    PublicKey(#[from] diffota_format::FormatError),
    #[error("the key needs a password and there is no terminal to ask on: give --password-file FILE or set DIFFOTA_KEY_PASSWORD (or `keygen --unencrypted` for a key without one, such as a CI key)")]
    NoPassword,
}

/// What is wrong with a file that should hold a minisign secret key.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyProblem {
    #[error("expected a comment line and a key line")]
    MissingKeyLine,
    #[error("key line is not base64")]
    NotBase64(#[source] base64::DecodeError),
    #[error("unknown key derivation")]
    UnknownKeyDerivation,
    #[error("key box")]
    Minisign(#[source] minisign::PError),
}

fn minisign_error(doing: &'static str) -> impl FnOnce(minisign::PError) -> KeyError {
    move |source| KeyError::Minisign { doing, source }
}

/// Where the password for an encrypted key comes from.
#[derive(Clone, Debug)]
pub enum Password {
    /// Ask on the terminal.
    Prompt,
    Given(String),
    /// The key is (or is to be) stored without a password.
    None,
}

impl Password {
    /// `--password-file`, else `$DIFFOTA_KEY_PASSWORD`, else a terminal prompt.
    pub fn from_sources(password_file: Option<&Path>) -> Result<Password, KeyError> {
        if let Some(path) = password_file {
            let text = read_text(path).map_err(|source| KeyError::Io {
                path: path.to_owned(),
                source,
            })?;
            return Ok(Password::Given(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            ));
        }
        match std::env::var("DIFFOTA_KEY_PASSWORD") {
            Ok(password) => Ok(Password::Given(password)),
            Err(_) => Ok(Password::Prompt),
        }
    }
}

pub fn generate(
    secret_path: &Path,
    public_path: &Path,
    password: Password,
    force: bool,
) -> Result<PublicKey, KeyError> {
    for path in [secret_path, public_path] {
        if path.exists() && !force {
            return Err(KeyError::Exists {
                path: path.to_owned(),
            });
        }
    }
    let pair = match password {
        Password::None => KeyPair::generate_unencrypted_keypair(),
        Password::Prompt => {
            require_terminal()?;
            KeyPair::generate_encrypted_keypair(None)
        }
        Password::Given(p) => KeyPair::generate_encrypted_keypair(Some(p)),
    }
    .map_err(minisign_error("generating a key pair"))?;
    let secret_box = pair
        .sk
        .to_box(Some("diffota secret key"))
        .map_err(minisign_error("encoding the secret key"))?;
    let public_box = pair
        .pk
        .to_box()
        .map_err(minisign_error("encoding the public key"))?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Io { path, source }
    };
    write_atomic(secret_path, secret_box.to_string().as_bytes()).map_err(io(secret_path))?;
    set_private(secret_path).map_err(io(secret_path))?;
    write_atomic(public_path, public_box.to_string().as_bytes()).map_err(io(public_path))?;
    Ok(pair.pk)
}

fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// A key or password file: a regular file of at most 64 KiB.
fn read_text(path: &Path) -> std::io::Result<String> {
    use diffota_files::local_file::{read_bounded_text, Links};
    read_bounded_text(path, 64 * 1024, Links::Follow)
}

/// minisign prompts on the controlling terminal: without one (a bitbake task, a CI job) say
/// what to give instead of its "No such device or address".
fn require_terminal() -> Result<(), KeyError> {
    match std::fs::File::open("/dev/tty") {
        Ok(_) => Ok(()),
        Err(_) => Err(KeyError::NoPassword),
    }
}

/// Loads a secret key, asking for its password only when it is encrypted.
pub fn load_secret_key(path: &Path, password: Password) -> Result<SecretKey, KeyError> {
    let text = read_text(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let bad = |problem: SecretKeyProblem| KeyError::BadSecretKey {
        path: path.to_owned(),
        problem,
    };
    let key_line = text
        .lines()
        .nth(1)
        .ok_or_else(|| bad(SecretKeyProblem::MissingKeyLine))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key_line.trim())
        .map_err(|e| bad(SecretKeyProblem::NotBase64(e)))?;
    // Bytes 2..4 name the key derivation: "Sc" (scrypt, encrypted) or zeros (no password).
    let encrypted = match raw.get(2..4) {
        Some(b"Sc") => true,
        Some([0, 0]) => false,
        _ => return Err(bad(SecretKeyProblem::UnknownKeyDerivation)),
    };
    let text = if encrypted {
        text
    } else {
        with_checksum(&text, raw)
    };
    let secret_box =
        SecretKeyBox::from_string(&text).map_err(|e| bad(SecretKeyProblem::Minisign(e)))?;
    if !encrypted {
        return SecretKey::from_unencrypted_box(secret_box)
            .map_err(|e| bad(SecretKeyProblem::Minisign(e)));
    }
    let result = match password {
        Password::Given(p) => SecretKey::from_box(secret_box, Some(p)),
        Password::Prompt => {
            require_terminal()?;
            SecretKey::from_box(secret_box, None)
        }
        Password::None => SecretKey::from_box(secret_box, Some(String::new())),
    };
    result.map_err(|e| {
        if e.to_string().contains("Wrong password") {
            KeyError::WrongPassword {
                path: path.to_owned(),
            }
        } else {
            bad(SecretKeyProblem::Minisign(e))
        }
    })
}

/// `minisign -G -W` (the C tool) leaves the checksum of an unencrypted key zero; the
/// minisign crate insists on it. Fill it in: BLAKE2b-256 of algorithm, key number and key.
fn with_checksum(text: &str, mut raw: Vec<u8>) -> String {
    use blake2::Digest;
    const CHECKSUM_AT: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64;
    if raw.len() != CHECKSUM_AT + 32 || raw[CHECKSUM_AT..].iter().any(|&b| b != 0) {
        return text.to_owned();
    }
    let mut hasher = blake2::Blake2b::<blake2::digest::consts::U32>::new();
    hasher.update(&raw[..2]);
    hasher.update(&raw[54..CHECKSUM_AT]);
    let checksum = hasher.finalize();
    raw[CHECKSUM_AT..].copy_from_slice(&checksum);
    let comment = text
        .lines()
        .next()
        .unwrap_or("untrusted comment: minisign secret key");
    format!(
        "{comment}\n{}\n",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A detached signature in the `.minisig` text format, over `data`.
pub fn sign(
    secret_key: &SecretKey,
    data: &[u8],
    trusted_comment: &str,
) -> Result<String, KeyError> {
    let signature = minisign::sign(
        None,
        secret_key,
        data,
        Some(trusted_comment),
        Some("signature from diffota chunk-server"),
    )
    .map_err(minisign_error("signing"))?;
    Ok(signature.into_string())
}

/// Writes `<path>.minisig` for the bytes of `path`.
pub fn sign_file(
    path: &Path,
    bytes: &[u8],
    key: &minisign::SecretKey,
    comment: &str,
) -> Result<PathBuf, KeyError> {
    let signature = sign(key, bytes, comment)?;
    let signature_path = signature_path(path);
    write_atomic(&signature_path, signature.as_bytes()).map_err(|source| KeyError::Io {
        path: signature_path.clone(),
        source,
    })?;
    Ok(signature_path)
}

/// Loads public key files as the keys `verify` trusts.
pub fn load_public_keys(paths: &[PathBuf]) -> Result<diffota_format::TrustedKeys, KeyError> {
    let mut keys = diffota_format::TrustedKeys::new();
    for path in paths {
        let text = read_text(path).map_err(|source| KeyError::Io {
            path: path.clone(),
            source,
        })?;
        keys.add(&path.display().to_string(), &text)?;
    }
    Ok(keys)
}

/// `--password-file` (or its fallbacks), then the secret key.
pub fn load_signing_key(path: &Path, password_file: Option<&Path>) -> Result<SecretKey, KeyError> {
    load_secret_key(path, Password::from_sources(password_file)?)
}
