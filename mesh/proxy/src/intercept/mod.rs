//! Interception (`--transparent`): connections redirected by iptables,
//! their original destination read back with SO_ORIGINAL_DST.
//!
//! [`orig_dst`] (SO_ORIGINAL_DST, the loop refusal gate) and
//! [`transparent`] (the outbound listener behind iptables REDIRECT; the
//! inbound side lives in [`crate::inbound`]).

pub mod orig_dst;
pub mod transparent;
