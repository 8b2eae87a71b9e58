//! `map_batches` on a stateful type in a pool of actors: for work with a costly setup
//! (a model loaded or fitted once per actor, then applied to every block it is given).
//!
//! The type implements [`BatchMapper`] and is registered with
//! [`register_batch_mapper!`](crate::register_batch_mapper), so that an actor in any
//! process can build it by name from its configuration. The pool starts `min` actors
//! and adds one, up to `max`, whenever every actor has a block in hand and more wait;
//! a block goes to the actor with the fewest in hand.

use std::sync::Mutex;

use arrow::array::RecordBatch;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::error::{DataError, Result};
use crate::ops::{run_parts, Op, Sink};

/// A stateful batch function: built once per actor from its configuration, then given
/// blocks one at a time.
pub trait BatchMapper: Send + Sync + Sized + 'static {
    /// What the mapper is built from (sent to every actor of the pool).
    type Config: Serialize + DeserializeOwned;
    /// Builds the mapper (loads or fits its model).
    fn new(config: Self::Config) -> Result<Self>;
    /// Maps one batch.
    fn map(&mut self, batch: RecordBatch) -> Result<RecordBatch>;
}

/// The registered name of a [`BatchMapper`]; implemented by
/// [`register_batch_mapper!`](crate::register_batch_mapper).
pub trait MapperName {
    /// `module::Type`.
    const NAME: &'static str;
}

/// A mapper behind a pointer, as the actor keeps it.
#[doc(hidden)]
pub trait DynMapper: Send + Sync {
    /// Maps one batch.
    fn map_dyn(&mut self, batch: RecordBatch) -> Result<RecordBatch>;
}

impl<M: BatchMapper> DynMapper for M {
    fn map_dyn(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        self.map(batch)
    }
}

/// An entry of the mapper registry. Made by
/// [`register_batch_mapper!`](crate::register_batch_mapper); not for direct use.
#[doc(hidden)]
pub struct MapperEntry {
    /// `module::Type`.
    pub name: &'static str,
    /// Builds one from its JSON configuration.
    pub make: fn(&[u8]) -> Result<Box<dyn DynMapper>>,
}

inventory::collect!(MapperEntry);

/// Builds an `M` from its JSON configuration. Not for direct use.
#[doc(hidden)]
pub fn make_mapper<M: BatchMapper>(config: &[u8]) -> Result<Box<dyn DynMapper>> {
    let config: M::Config = serde_json::from_slice(config)
        .map_err(|e| DataError::Invalid(format!("a mapper's configuration does not read: {e}")))?;
    Ok(Box::new(M::new(config)?))
}

/// Registers a [`BatchMapper`] so that an actor in any process can build it by name.
///
/// ```
/// use prism_data::arrow::array::RecordBatch;
/// struct Identity;
/// impl prism_data::BatchMapper for Identity {
///     type Config = ();
///     fn new(_: ()) -> prism_data::Result<Self> { Ok(Identity) }
///     fn map(&mut self, b: RecordBatch) -> prism_data::Result<RecordBatch> { Ok(b) }
/// }
/// prism_data::register_batch_mapper!(Identity);
/// ```
#[macro_export]
macro_rules! register_batch_mapper {
    ($t:ident) => {
        impl $crate::MapperName for $t {
            const NAME: &'static str = concat!(module_path!(), "::", stringify!($t));
        }
        $crate::__private::inventory::submit! {
            $crate::MapperEntry {
                name: concat!(module_path!(), "::", stringify!($t)),
                make: $crate::make_mapper::<$t>,
            }
        }
    };
}

/// How a pool stage runs: the mapper's name and configuration, and the pool's size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PoolSpec {
    pub name: String,
    pub config: Vec<u8>,
    pub min: usize,
    pub max: usize,
    pub cpus: f64,
}

/// One actor of a pool: a mapper, built when the actor starts.
#[prism::actor]
pub struct MapperActor {
    mapper: Mutex<Result<Box<dyn DynMapper>>>,
    name: String,
}

#[prism::actor]
impl MapperActor {
    /// Builds the mapper registered as `name` from `config` (its failure is kept and
    /// reported by every call).
    pub fn new(name: String, config: Vec<u8>) -> Self {
        let mapper = inventory::iter::<MapperEntry>
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| {
                DataError::Unregistered(format!(
                    "{name} (a batch mapper: add prism_data::register_batch_mapper!(...) next to it)"
                ))
            })
            .and_then(|e| (e.make)(&config));
        MapperActor {
            mapper: Mutex::new(mapper),
            name,
        }
    }

    /// Maps `block`, runs `ops` on the result and ends in `sink`.
    pub fn map(&mut self, block: Block, ops: Vec<Op>, sink: Sink) -> Result<crate::exec::Done> {
        crate::exec::timed(|| {
            let operator = format!(
                "map_batches({})",
                self.name.rsplit("::").next().unwrap_or(&self.name)
            );
            let mapper = self.mapper.get_mut().unwrap_or_else(|e| e.into_inner());
            let mapper = mapper.as_mut().map_err(|e| e.clone())?;
            let out = mapper.map_dyn(block.0).map_err(|e| DataError::Operator {
                operator,
                message: e.to_string(),
            })?;
            run_parts(&ops, &sink, out.schema(), vec![out])
        })
    }
}

/// A pool's actors and how many blocks each has in hand.
pub(crate) struct Pool {
    spec: PoolSpec,
    actors: Vec<(MapperActorHandle, usize)>,
}

impl Drop for Pool {
    /// The actors end with their stage, and their node frees their CPUs at once for
    /// the stage or plan that runs next. Left to their handles' release, they end only
    /// once every process that held a handle let go, and a plan of several pools in a
    /// row could wait on CPUs the last one's actors still held.
    fn drop(&mut self) {
        for (actor, _) in &self.actors {
            prism::kill(actor);
        }
    }
}

impl Pool {
    /// A pool of `spec`, which leaves one CPU of the runtime to the tasks that feed it:
    /// at most `(CPUs - 1) / cpus` actors (and on a runtime with fewer than `cpus + 1`
    /// CPUs, one actor holding none), so that the pool cannot starve its own input.
    pub(crate) fn new(mut spec: PoolSpec) -> Pool {
        let total = prism::cluster_resources()
            .ok()
            .and_then(|r| r.get("CPU").copied())
            .unwrap_or(1.0);
        if spec.cpus > 0.0 {
            if total - spec.cpus < 1.0 {
                spec.cpus = 0.0;
                spec.max = 1;
            } else {
                let cap = (((total - 1.0) / spec.cpus).floor() as usize).max(1);
                spec.max = spec.max.min(cap);
            }
        }
        spec.min = spec.min.min(spec.max).max(1);
        let mut pool = Pool {
            spec,
            actors: Vec::new(),
        };
        for _ in 0..pool.spec.min.max(1) {
            pool.grow();
        }
        pool
    }

    fn grow(&mut self) {
        let a = MapperActor::options()
            .num_cpus(self.spec.cpus)
            .remote(self.spec.name.clone(), self.spec.config.clone());
        self.actors.push((a, 0));
    }

    /// Sends `block` to the actor with the fewest in hand (a new one if all have some
    /// and the pool may grow); returns which.
    pub(crate) fn submit(
        &mut self,
        block: &prism::ObjectRef<Block>,
        ops: &prism::ObjectRef<Vec<Op>>,
        sink: Sink,
    ) -> (usize, prism::ObjectRef<Result<crate::exec::Done>>) {
        if self.actors.iter().all(|(_, n)| *n > 0) && self.actors.len() < self.spec.max {
            self.grow();
        }
        let (i, _) = self
            .actors
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, n))| *n)
            .unwrap_or((0, &self.actors[0]));
        self.actors[i].1 += 1;
        (i, self.actors[i].0.map(block, ops, sink))
    }

    /// Actor `i` gave back a block.
    pub(crate) fn done(&mut self, i: usize) {
        if let Some(a) = self.actors.get_mut(i) {
            a.1 = a.1.saturating_sub(1);
        }
    }
}
