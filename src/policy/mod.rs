//! Who may spend what: caller tokens and allow-lists (least privilege), per-provider rate
//! limits, token budgets, and the key slots a reload replaces.

pub mod access;
pub mod budget;
pub mod ratelimit;
pub mod reload;
