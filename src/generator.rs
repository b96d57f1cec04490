//! Secret value generators: passwords, tokens, HMAC keys and ed25519 key pairs, all from
//! the OS CSPRNG, returned as [`SecretValue`] which zeroes its bytes on drop and never
//! prints them.

/// Character classes a password may draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CharClasses {
    pub lower: bool,
    pub upper: bool,
    pub digits: bool,
    pub symbols: bool,
}

/// Text encoding of random bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// URL-safe base64 without padding.
    Base64Url,
    Hex,
}

/// How a policy generates new values. Built by `config` from the TOML `generator` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratorSpec {
    /// `{ type = "password", length = 32, lower = true, upper = true, digits = true, symbols = false }`
    Password { length: usize, classes: CharClasses },
    /// `{ type = "token", bytes = 32, prefix = "sk_", encoding = "base64url" | "hex" }`
    Token {
        bytes: usize,
        prefix: String,
        encoding: Encoding,
    },
    /// `{ type = "hmac", bytes = 64 }`: raw random key bytes, hex-encoded in the value.
    Hmac { bytes: usize },
    /// `{ type = "ed25519" }`: a signing key pair for JWTs.
    Ed25519,
}

/// A secret value (stub, being written).
pub struct SecretValue(zeroize::Zeroizing<Vec<u8>>);
