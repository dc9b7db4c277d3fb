//! The node's actors: the supervisor and one actor per layer. They own lifecycle and
//! background work only; the data path never goes through them.

pub(crate) mod supervisor;
pub(crate) mod tier_actor;
