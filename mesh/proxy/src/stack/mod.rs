//! The request path: the layers a request passes through, assembled per
//! direction.
//!
//! [`forward`] (the stack, assembled in one place: metrics, limits,
//! routing, headers, upgrade, timeout, upstream) and [`serve`] (the
//! explicit-mode listener that hands each request to it).

pub mod forward;
pub mod serve;

pub use forward::{ClientIdentity, Forwarder, Via, CLIENT_ID_HEADER};
