//! Empty on purpose: the library target exists only so that `inspeq-daemon` can
//! list this crate as a build-dependency and cargo rebuilds it on changes. The
//! programs are the `inspeq` binary (`main.rs`).
#![no_std]
