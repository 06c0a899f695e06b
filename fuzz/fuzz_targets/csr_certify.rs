//! mesh-control's certify path with an arbitrary DER CSR: the identity and
//! token are accepted, so every input reaches the CSR checks and, when they
//! pass, the CA's signing. A certificate is only ever issued for a CSR
//! that names exactly the requested identity.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mesh_control::authority::Authority;
use mesh_control::ca::Ca;
use mesh_control::token::{TokenError, TokenVerifier};
use mesh_identity::SpiffeId;

const IDENTITY: &str = "spiffe://fuzz.test/ns/default/sa/web";

/// Proves every identity: the fuzzer aims at the CSR, not at the token.
struct AcceptAll;

impl TokenVerifier for AcceptAll {
    async fn verify(&self, _identity: &SpiffeId, _token: &[u8]) -> Result<(), TokenError> {
        Ok(())
    }
}

fn authority() -> &'static Authority<AcceptAll> {
    static AUTHORITY: OnceLock<Authority<AcceptAll>> = OnceLock::new();
    AUTHORITY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a scratch directory for the CA");
        let ca = Ca::load_or_generate(dir.path(), "fuzz.test").expect("a CA");
        Authority::new(ca, AcceptAll, "fuzz.test".to_owned(), Duration::from_secs(3600))
    })
}

fuzz_target!(|data: &[u8]| {
    let authority = authority();
    let rt = weft_fuzz::runtime();
    if let Ok(issued) = rt.block_on(authority.certify(IDENTITY, b"token", data)) {
        // Only a CSR that checks out is signed, and only for its identity.
        let id = SpiffeId::parse(IDENTITY).unwrap();
        mesh_control::csr::check(data, &id).expect("issued for a CSR that fails the checks");
        assert!(!issued.leaf_der.is_empty());
    }
});
