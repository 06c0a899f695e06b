//! The HTTP core: what every request goes through on either listener,
//! whatever decided its upstream.
//!
//! [`authority`] (an authority's key: lower-case `host:port`, no allocation), [`headers`] (hop-by-hop removal), [`body`] (body limit, pooled response
//! bodies), [`upstream`] (connections to one upstream), [`pool`] (its
//! HTTP/1 connections: reuse, idle expiry, the cap), [`error`] (proxy-generated
//! responses), [`upgrade`] (HTTP/1.1 Upgrade, spliced after a 101),
//! [`orig_proto`] (HTTP/1 over the proxies' HTTP/2), [`router`]
//! (authority -> static upstream), [`relay`] (bytes both ways with an idle bound), [`pace`] (how slowly a client may
//! send a request body), [`admit`] (connection caps), [`phase`] (the lifecycle), [`server`] (accept loops, graceful
//! drain, the hyper connection builder) and [`idle`] (closing connections
//! that do nothing).

pub mod admit;
pub mod authority;
pub mod body;
pub mod error;
pub mod headers;
pub mod idle;
pub mod orig_proto;
pub mod pace;
pub mod phase;
pub mod pool;
pub mod relay;
pub mod router;
pub mod server;
pub mod upgrade;
pub mod upstream;
