//! Integration tests: the real `mesh-proxy` binary on 127.0.0.1 ephemeral
//! ports, in front of an in-process app server; `transparent` runs it in
//! network namespaces behind `weft init`'s iptables rules (needs root).
#![forbid(unsafe_code)]

mod common;
mod conns;
mod control_security;
mod control_support;
mod discovery;
mod discovery_support;
mod failclosed;
mod forwarding;
mod golden;
mod injected;
mod lifecycle;
mod loops;
mod limits;
mod mesh_support;
mod mtls;
mod pool;
mod resend;
mod shed;
mod stack;
mod transparent;
mod websocket;
