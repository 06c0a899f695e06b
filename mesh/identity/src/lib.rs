//! Weft workload identity: everything a proxy needs to be a meshed workload.
//! An in-memory ECDSA P-256 key, certification by mesh-control over gRPC,
//! rotation before expiry, and rustls configs for SPIFFE-identified mTLS.
//!
//! ```text
//!  WorkloadKey ──CSR──> Certifier ──Certify(identity, token, csr)──> mesh-control
//!                          │  re-certify at 70 % lifetime, backoff on failure
//!                          ▼
//!          watch<Option<Arc<Credentials>>>  (is_ready() after the first)
//!                 │                     │
//!          server_config()        client_config(expected server SpiffeId)
//!          (peer: any SPIFFE ID   (peer: exactly that SPIFFE ID)
//!           of our trust domain)
//!                 └──> peer_identity(&conn) after the handshake
//! ```
//!
//! Crypto is aws-lc-rs only (`rustls::crypto::aws_lc_rs`); nothing here
//! installs a process-wide default provider.
#![forbid(unsafe_code)]

mod certifier;
mod control;
mod control_listener;
mod credentials;
mod key;
mod spiffe;
mod tls;
mod verify;

pub use certifier::{Certifier, CertifierConfig, CertifierError, CertifyError};
pub use control::{
    control_client_config, control_identity, control_server_config, ControlAddressError, ControlEndpoint,
    CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT,
};
pub use control_listener::{control_incoming, ListenerLimits, TlsConn};
pub use credentials::{Credentials, CredentialsError};
pub use key::{KeyError, WorkloadKey};
pub use spiffe::{CertIdentityError, SpiffeId, SpiffeIdError};
pub use tls::{client_config, peer_identity, server_config, CredentialsWatch, TlsError, TrustAnchors, ALPN_WEFT};
pub use verify::PeerIdentityError;
