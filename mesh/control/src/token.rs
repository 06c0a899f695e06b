//! Proof of identity. `TokenVerifier` is the seam: the bootstrap-token file
//! (local and netns substrates) is implemented here; the Kubernetes
//! TokenReview verifier is in `tokenreview`.
//!
//! Bootstrap token file format (written by the substrate), one entry a line:
//!
//! ```text
//! # comments start with '#'; blank lines are ignored
//! spiffe://cluster.local/ns/default/sa/web   3f9c1a...   # token: any non-blank text
//! spiffe://cluster.local/ns/default/sa/api   77aa02...
//! ```
//!
//! An identity may be listed more than once (token rotation: any listed token
//! is accepted). The file is re-read when its size, mtime or inode changes,
//! checked on every request, so tokens added for new workloads work at once.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use mesh_identity::SpiffeId;

/// Decides whether `token` proves `identity`.
pub trait TokenVerifier: Send + Sync + 'static {
    fn verify(&self, identity: &SpiffeId, token: &[u8]) -> impl Future<Output = Result<(), TokenError>> + Send;
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bootstrap token is registered for this identity")]
    UnknownIdentity,
    #[error("token does not match the identity's bootstrap token")]
    Mismatch,
    #[error("no token verifier is configured (start mesh-control with --bootstrap-tokens)")]
    NotConfigured,
    /// The Kubernetes API did not authenticate the token (expired, deleted
    /// pod or ServiceAccount, not a token at all); its reason is carried.
    #[error("the Kubernetes API did not authenticate the token: {0}")]
    NotAuthenticated(String),
    /// The token was not issued for the audience mesh-control asks for.
    #[error(
        "the token is not for audience {audience:?} (the injector mounts a projected ServiceAccount token \
         with that audience; see --token-audience): {detail}"
    )]
    AudienceMismatch { audience: String, detail: String },
    /// The token is genuine but proves someone else.
    #[error("the token proves {proven}, not this identity")]
    IdentityMismatch { proven: String },
    /// The verifier could not decide (e.g. token source unreadable); the
    /// caller may retry.
    #[error("token verifier unavailable: {0}")]
    Unavailable(String),
}

/// Refuses every token: what mesh-control runs with when no proof-of-identity
/// source is configured, so a misconfigured control plane issues nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct DenyAll;

impl TokenVerifier for DenyAll {
    async fn verify(&self, _identity: &SpiffeId, _token: &[u8]) -> Result<(), TokenError> {
        Err(TokenError::NotConfigured)
    }
}

/// A bootstrap-token file problem, `file:line: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{}", .problems.join("\n"))]
    Invalid { problems: Vec<String> },
}

type Tokens = HashMap<SpiffeId, Vec<Vec<u8>>>;

/// Identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    ino: u64,
}

/// Verifies tokens against the bootstrap-token file, reloading on change.
#[derive(Debug)]
pub struct BootstrapTokens {
    path: PathBuf,
    state: Mutex<(Option<Stamp>, Tokens)>,
}

impl BootstrapTokens {
    /// Loads `path`; any unreadable file or bad line is an error here (at
    /// startup an operator is watching). Later reloads that fail keep the
    /// last good set and log.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let stamp = stamp(path).map_err(|e| TokenFileError::Read { path: path.to_owned(), reason: e.to_string() })?;
        let tokens = read(path)?;
        tracing::info!(path = %path.display(), identities = tokens.len(), "loaded bootstrap tokens");
        Ok(Self { path: path.to_owned(), state: Mutex::new((Some(stamp), tokens)) })
    }

    /// Parses the file contents; every bad line is reported.
    pub fn parse(path: &Path, text: &str) -> Result<Tokens, TokenFileError> {
        let mut tokens = Tokens::new();
        let mut problems = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let at = format!("{}:{}", path.display(), n + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, token] = fields[..] else {
                problems.push(format!("{at}: expected `<spiffe-id> <token>`, found {} fields", fields.len()));
                continue;
            };
            match SpiffeId::parse(id) {
                Ok(id) => tokens.entry(id).or_default().push(token.as_bytes().to_vec()),
                Err(e) => problems.push(format!("{at}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(tokens)
        } else {
            Err(TokenFileError::Invalid { problems })
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, (Option<Stamp>, Tokens)> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = stamp(&self.path).ok();
        if now != state.0 {
            match now {
                // Removed: the substrate revoked every token.
                None => {
                    tracing::warn!(path = %self.path.display(), "bootstrap token file is gone; refusing all tokens");
                    *state = (None, Tokens::new());
                }
                Some(stamp) => match read(&self.path) {
                    Ok(tokens) => {
                        tracing::info!(path = %self.path.display(), identities = tokens.len(), "reloaded bootstrap tokens");
                        *state = (Some(stamp), tokens);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "bootstrap token file invalid; keeping the previous tokens");
                        // Do not re-parse the same bad version on every request.
                        state.0 = Some(stamp);
                    }
                },
            }
        }
        state
    }
}

impl TokenVerifier for BootstrapTokens {
    async fn verify(&self, identity: &SpiffeId, token: &[u8]) -> Result<(), TokenError> {
        let state = self.current();
        let known = state.1.get(identity).ok_or(TokenError::UnknownIdentity)?;
        // Check every listed token with a constant-time compare so timing
        // reveals neither which token nor how much of it matched.
        let matched = known.iter().fold(false, |acc, t| acc | constant_time_eq(t, token));
        if matched {
            Ok(())
        } else {
            Err(TokenError::Mismatch)
        }
    }
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(Stamp { len: meta.len(), modified: meta.modified().ok(), ino: meta.ino() })
}

fn read(path: &Path) -> Result<Tokens, TokenFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TokenFileError::Read { path: path.to_owned(), reason: e.to_string() })?;
    BootstrapTokens::parse(path, &text)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn parses_comments_blanks_and_repeats() {
        let text = "# tokens\n\nspiffe://td/ns/a/sa/x  tok1 # first\nspiffe://td/ns/a/sa/x tok2\nspiffe://td/ns/b/sa/y tok3\n";
        let tokens = BootstrapTokens::parse(Path::new("t"), text).unwrap();
        assert_eq!(tokens[&id("spiffe://td/ns/a/sa/x")], vec![b"tok1".to_vec(), b"tok2".to_vec()]);
        assert_eq!(tokens.len(), 2);
    }

    #[test]
    fn reports_every_bad_line_with_its_number() {
        let text = "spiffe://td/ns/a/sa/x\nhttp://td/x tok\nspiffe://td/ns/a/sa/x tok\nspiffe://td/ns/a/sa/x a b\n";
        let err = BootstrapTokens::parse(Path::new("tokens"), text).unwrap_err();
        let TokenFileError::Invalid { problems } = err else { panic!("{err:?}") };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("tokens:1:"), "{problems:?}");
        assert!(problems[1].starts_with("tokens:2:"), "{problems:?}");
        assert!(problems[2].starts_with("tokens:4:"), "{problems:?}");
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[tokio::test]
    async fn verifies_and_reloads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "spiffe://td/ns/a/sa/x secret\n").unwrap();
        let v = BootstrapTokens::load(&path).unwrap();
        let x = id("spiffe://td/ns/a/sa/x");
        let y = id("spiffe://td/ns/a/sa/y");
        assert_eq!(v.verify(&x, b"secret").await, Ok(()));
        assert_eq!(v.verify(&x, b"secreT").await, Err(TokenError::Mismatch));
        assert_eq!(v.verify(&y, b"secret").await, Err(TokenError::UnknownIdentity));
        // A longer file (size changes even within one mtime tick).
        std::fs::write(&path, "spiffe://td/ns/a/sa/x secret\nspiffe://td/ns/a/sa/y other-token\n").unwrap();
        assert_eq!(v.verify(&y, b"other-token").await, Ok(()));
        // A broken version keeps the last good set.
        std::fs::write(&path, "garbage line with too many fields here\n").unwrap();
        assert_eq!(v.verify(&x, b"secret").await, Ok(()));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(v.verify(&x, b"secret").await, Err(TokenError::UnknownIdentity));
    }
}
