//! Class trainables, Ray Tune's `Trainable` API: a type set up from a configuration,
//! trained one step at a time, saved to a checkpoint and restored from one. Each trial
//! runs in an actor of its own, a [`TrialRunner`] holding the trial's resources, which
//! sets the trainable up (from the trial's latest checkpoint if it runs again), calls
//! `step` and reports each step's metrics until the scheduler stops the trial, a stop
//! condition is met or a step reports `done`, and saves a checkpoint every so many
//! steps ([`TuneOptions::checkpoint_every`](crate::tuner::TuneOptions::checkpoint_every)).
//! The options must say when a trial ends: a stop condition
//! ([`TuneOptions::stop_when`](crate::tuner::TuneOptions::stop_when), `"done"` among
//! them for a trainable that says so itself) or ASHA's `max_t`.
//!
//! As with estimators, the runner finds the trainable's code under its name in a
//! compile-time registry, so it runs on any node of a cluster:
//! [`register_trainable!`](crate::register_trainable) files a type there.
//!
//! ```
//! use prism_tune::trainable::Trainable;
//! use prism_tune::tuner::{Metrics, TuneOptions, Tuner};
//! use prism_tune::{uniform, Config, Mode, RandomSearch, Space, TuneError};
//!
//! /// Gradient descent on (x - 3)², the learning rate searched.
//! struct Descent { x: f64, rate: f64 }
//!
//! impl Trainable for Descent {
//!     fn setup(config: &Config) -> Result<Self, TuneError> {
//!         Ok(Descent { x: 0.0, rate: config.f64("rate")? })
//!     }
//!     fn step(&mut self) -> Result<Metrics, TuneError> {
//!         self.x -= self.rate * 2.0 * (self.x - 3.0);
//!         Ok(Metrics::from([("loss".to_string(), (self.x - 3.0).powi(2))]))
//!     }
//!     fn save(&self) -> Result<Option<Vec<u8>>, TuneError> {
//!         Ok(Some(self.x.to_le_bytes().to_vec()))
//!     }
//!     fn restore(&mut self, checkpoint: &[u8]) -> Result<(), TuneError> {
//!         let bytes = checkpoint.try_into().map_err(|_| TuneError::Data("8 bytes".into()))?;
//!         self.x = f64::from_le_bytes(bytes);
//!         Ok(())
//!     }
//! }
//! prism_tune::register_trainable!(Descent);
//!
//! prism::init().unwrap();
//! let space = Space::new().add("rate", uniform(0.01, 0.4));
//! let options = TuneOptions::new("loss", Mode::Min)
//!     .stop_when("training_iteration", 20.0)
//!     .checkpoint_every(5);
//! let mut tuner = Tuner::new(Box::new(RandomSearch::new(&space, 6, 0).unwrap()), options);
//! let grid = tuner.run_trainable::<Descent>().unwrap();
//! let best = grid.best().unwrap();
//! assert_eq!(best.history.len(), 20);
//! assert!(best.last("loss").unwrap() < 1e-3);
//! assert_eq!(best.checkpoint.as_ref().unwrap().iteration, 20);
//! prism::shutdown();
//! ```

use crate::space::Config;
use crate::tuner::{Metrics, Reporter};
use crate::TuneError;

/// A trainable set up from a configuration and trained step by step; see the module's
/// documentation.
pub trait Trainable: 'static {
    /// A new trainable for `config` (its model and data, say).
    fn setup(config: &Config) -> Result<Self, TuneError>
    where
        Self: Sized;

    /// One step of training (an epoch, say) and its metrics. A metric `done` of 1 or
    /// more ends the trial after this step.
    fn step(&mut self) -> Result<Metrics, TuneError>;

    /// A checkpoint of the trainable's state, to restore it from should the trial run
    /// again; `None` (the default) if it keeps none.
    fn save(&self) -> Result<Option<Vec<u8>>, TuneError> {
        Ok(None)
    }

    /// Takes back a checkpoint that [`Trainable::save`] made, after `setup`.
    fn restore(&mut self, _checkpoint: &[u8]) -> Result<(), TuneError> {
        Err(TuneError::Runtime(
            "this trainable cannot restore a checkpoint".into(),
        ))
    }
}

/// A registered trainable: its name and how to set it up. Made by
/// [`register_trainable!`](crate::register_trainable); not for direct use.
pub struct Registration {
    /// `std::any::type_name` of the trainable.
    pub name: fn() -> &'static str,
    /// [`Trainable::setup`], boxed.
    pub setup: fn(&Config) -> Result<Box<dyn Trainable>, TuneError>,
}

inventory::collect!(Registration);

/// Sets `T` up, boxed: what [`register_trainable!`](crate::register_trainable) files.
pub fn setup_boxed<T: Trainable>(config: &Config) -> Result<Box<dyn Trainable>, TuneError> {
    T::setup(config).map(|t| Box::new(t) as Box<dyn Trainable>)
}

impl crate::registry::Registered for Registration {
    const WHAT: (&'static str, &'static str, &'static str) =
        ("trainable", "register_trainable", "Trainable");

    fn name(&self) -> &'static str {
        (self.name)()
    }
}

/// The registration of the trainable named `name`.
pub(crate) fn lookup(name: &str) -> Result<&'static Registration, TuneError> {
    crate::registry::lookup(name)
}

/// Files a [`Trainable`] in the registry its trials' actors find it in. Once per type,
/// at the top level of a module: `prism_tune::register_trainable!(MyTrainable);`.
#[macro_export]
macro_rules! register_trainable {
    ($t:ty) => {
        $crate::__private::inventory::submit! {
            $crate::trainable::Registration {
                name: ::std::any::type_name::<$t>,
                setup: $crate::trainable::setup_boxed::<$t>,
            }
        }
    };
}

/// The actor a class trainable's trial runs in.
#[prism::actor]
pub struct TrialRunner {
    trainable: String,
    config: Config,
}

#[prism::actor]
impl TrialRunner {
    /// A runner for a trial of the trainable registered as `trainable`.
    pub fn new(trainable: String, config: Config) -> Self {
        TrialRunner { trainable, config }
    }

    /// Runs the trial: sets the trainable up (restored from the checkpoint the trial
    /// goes on from, if any), then steps and reports until the trial is to stop,
    /// checkpointing every `checkpoint_every` steps and after the last one.
    pub fn train(
        &self,
        reporter: Reporter,
        checkpoint_every: Option<usize>,
    ) -> Result<(), TuneError> {
        let mut trainable = (lookup(&self.trainable)?.setup)(&self.config)?;
        if let Some(bytes) = reporter.checkpoint() {
            trainable.restore(bytes)?;
        }
        let mut iteration = reporter.iteration();
        loop {
            let metrics = trainable.step()?;
            iteration += 1;
            let done = metrics.get("done").is_some_and(|d| *d >= 1.0);
            let due = checkpoint_every.is_some_and(|k| iteration % k.max(1) == 0);
            let go_on = match due.then(|| trainable.save()).transpose()?.flatten() {
                Some(bytes) => reporter.report_checkpoint(metrics, bytes)?,
                None => reporter.report(metrics)?,
            };
            if !go_on || done {
                // The trial's last state, unless just saved.
                if checkpoint_every.is_some() && !due {
                    if let Some(bytes) = trainable.save()? {
                        reporter.keep_checkpoint(bytes)?;
                    }
                }
                return Ok(());
            }
        }
    }
}
