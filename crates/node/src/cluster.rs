//! The cluster: how nodes reach each other. Membership, placement and partition ownership
//! (decided by the store) live beside this module; [`transport`] carries requests, replies
//! and nudges between nodes over `ractor_cluster`.

pub mod transport;
