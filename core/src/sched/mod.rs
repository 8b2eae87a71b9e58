//! Resources and the worker pool: the books of what work asks for and what a node has
//! ([`books`], shared with the node daemon), and the pool of threads that runs work
//! once its resources are granted ([`pool`]), and the placing of placement groups'
//! bundles on nodes ([`bundles`]).

pub(crate) mod books;
pub(crate) mod bundles;
pub(crate) mod pool;

pub(crate) use books::{Capacity, Demand, Grant, UNIT};
pub(crate) use pool::{blocking, current_worker, spin_until, Pool, Work, SPIN};
