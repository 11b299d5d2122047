//! Signed remote documents: who may write entries that other machines run.
//!
//! A writer holding a secret key (`kache keygen`, `KACHE_SIGNING_KEY`)
//! signs every entry manifest, build manifest and shard it uploads. A
//! reader with trusted public keys (`KACHE_TRUSTED_KEYS`) accepts only
//! documents signed by one of them: anything else is a refusal with a
//! reason, never an error. The bytes signed are defined next to the
//! documents (`kache_core::manifest`); this module holds the keys and the
//! ed25519 arithmetic (ring's, already in the tree for TLS).
//!
//! Text forms: a public key is `ed25519:<64 hex>`, a secret key
//! `kache-secret-ed25519:<64 hex>` (the 32-byte seed), a signature 128 hex
//! digits. A key's id, for messages, is the first 12 hex digits of its
//! public key.

use kache_core::manifest::Signature;
use ring::rand::SecureRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "kache-secret-ed25519:";

/// A key that signs uploads.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "SigningKey({})", self.public)
    }
}

/// A public key, as trusted by readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

/// Why a document was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It carries no signature (or, for an entry, no pack hash to bind).
    Unsigned,
    /// Signed, by a key nobody trusts (its text form).
    UntrustedKey(String),
    /// Signed by a trusted key, but the signature does not match the bytes.
    BadSignature(String),
    /// The manifest checks out but the pack is not the one it signed.
    PackMismatch,
}

impl Refusal {
    /// The reason as `kache stats` counts it.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::UntrustedKey(_) => "untrusted key",
            Self::BadSignature(_) => "bad signature",
            Self::PackMismatch => "pack mismatch",
        }
    }

    /// The key involved, if any (for "logged once per key").
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::UntrustedKey(key) | Self::BadSignature(key) => Some(key),
            _ => None,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unsigned => write!(f, "unsigned"),
            Self::UntrustedKey(key) => write!(f, "signed by untrusted key {key}"),
            Self::BadSignature(key) => write!(f, "bad signature by {key}"),
            Self::PackMismatch => write!(f, "pack differs from the one signed"),
        }
    }
}

impl SigningKey {
    /// A new random key; returns it with its secret text form.
    pub fn generate() -> Result<(Self, String), String> {
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| "the system's random source failed".to_string())?;
        let text = format!("{SECRET_PREFIX}{}", hex(&seed));
        Ok((Self::from_seed(&seed)?, text))
    }

    /// Reads a secret key's text form (surrounding whitespace allowed).
    pub fn parse(text: &str) -> Result<Self, String> {
        let digits = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("a signing key starts with {SECRET_PREFIX:?}"))?;
        let seed: [u8; 32] = unhex(digits)
            .and_then(|b| b.try_into().ok())
            .ok_or("a signing key holds 64 hex digits")?;
        Self::from_seed(&seed)
    }

    fn from_seed(seed: &[u8; 32]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| "not an ed25519 seed".to_string())?;
        let public = PublicKey(
            pair.public_key()
                .as_ref()
                .try_into()
                .map_err(|_| "ed25519 public keys are 32 bytes".to_string())?,
        );
        Ok(Self { pair, public })
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            key: self.public.to_string(),
            sig: hex(self.pair.sign(message).as_ref()),
        }
    }
}

impl PublicKey {
    /// Reads `ed25519:<64 hex>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let digits = text
            .strip_prefix(PUBLIC_PREFIX)
            .ok_or_else(|| format!("{text:?}: a public key starts with {PUBLIC_PREFIX:?}"))?;
        unhex(digits)
            .and_then(|b| b.try_into().ok())
            .map(Self)
            .ok_or_else(|| format!("{text:?}: a public key holds 64 hex digits"))
    }

    /// The first 12 hex digits, for messages.
    pub fn id(&self) -> String {
        hex(&self.0[..6])
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex(&self.0))
    }
}

/// The keys a reader accepts signatures from (several, for rotation).
/// Empty means "not checked"; [`TrustedKeys::nobody`] refuses everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
    nobody: bool,
}

impl TrustedKeys {
    /// Reads a comma- or whitespace-separated list of public keys.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(PublicKey::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self::from_keys)
    }

    pub fn from_keys(keys: Vec<PublicKey>) -> Self {
        Self {
            keys,
            nobody: false,
        }
    }

    /// Checks signatures but trusts no key: every document is refused.
    pub fn nobody() -> Self {
        Self {
            keys: Vec::new(),
            nobody: true,
        }
    }

    /// No trusted keys: the remote is unauthenticated and nothing is checked.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.nobody
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Accepts `signature` over `message` if a trusted key made it.
    pub fn verify(&self, message: &[u8], signature: Option<&Signature>) -> Result<(), Refusal> {
        let Some(signature) = signature else {
            return Err(Refusal::Unsigned);
        };
        let Ok(key) = PublicKey::parse(&signature.key) else {
            return Err(Refusal::UntrustedKey(short(&signature.key)));
        };
        if !self.keys.contains(&key) {
            return Err(Refusal::UntrustedKey(key.id()));
        }
        let Some(sig) = unhex(&signature.sig).filter(|s| s.len() == 64) else {
            return Err(Refusal::BadSignature(key.id()));
        };
        UnparsedPublicKey::new(&ED25519, &key.0)
            .verify(message, &sig)
            .map_err(|_| Refusal::BadSignature(key.id()))
    }
}

/// A hostile key text, cut for a log line.
fn short(text: &str) -> String {
    text.chars().take(24).filter(|c| !c.is_control()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_key_and_bytes() {
        let (key, secret) = SigningKey::generate().unwrap();
        let again = SigningKey::parse(&secret).unwrap();
        assert_eq!(key.public(), again.public());
        let trusted = TrustedKeys::parse(&format!(" {} ,", key.public())).unwrap();
        let signature = key.sign(b"entry one");
        assert_eq!(trusted.verify(b"entry one", Some(&signature)), Ok(()));
        assert_eq!(
            trusted.verify(b"entry two", Some(&signature)),
            Err(Refusal::BadSignature(key.public().id()))
        );
        assert_eq!(trusted.verify(b"entry one", None), Err(Refusal::Unsigned));

        let (other, _) = SigningKey::generate().unwrap();
        let foreign = other.sign(b"entry one");
        assert_eq!(
            trusted.verify(b"entry one", Some(&foreign)),
            Err(Refusal::UntrustedKey(other.public().id()))
        );
        // An honest signature relabelled with the trusted key is still bad.
        let relabelled = Signature {
            key: key.public().to_string(),
            sig: foreign.sig.clone(),
        };
        assert_eq!(
            trusted.verify(b"entry one", Some(&relabelled)),
            Err(Refusal::BadSignature(key.public().id()))
        );
        // Rotation: either of two trusted keys is accepted.
        let both = TrustedKeys::from_keys(vec![other.public(), key.public()]);
        assert_eq!(both.verify(b"entry one", Some(&foreign)), Ok(()));
    }

    #[test]
    fn malformed_keys_are_errors_that_never_echo_a_secret() {
        assert!(PublicKey::parse("ed25519:abcd").is_err());
        assert!(PublicKey::parse(&format!("rsa:{}", "0".repeat(64))).is_err());
        assert!(TrustedKeys::parse("ed25519:zz").is_err());
        let err = SigningKey::parse(&"1".repeat(64)).unwrap_err();
        assert!(!err.contains("1111"), "{err}");
        let (key, _) = SigningKey::generate().unwrap();
        assert!(!format!("{key:?}").contains("secret"));
        // Garbage in a signature is a refusal, not a panic.
        let trusted = TrustedKeys::from_keys(vec![key.public()]);
        let garbage = Signature {
            key: key.public().to_string(),
            sig: "é".repeat(64),
        };
        assert!(trusted.verify(b"x", Some(&garbage)).is_err());
    }
}
