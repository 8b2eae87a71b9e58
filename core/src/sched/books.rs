//! The resource books: what a task or actor asks for ([`Demand`]), what a node has
//! and has left ([`Capacity`]), and what a piece of work was given ([`Grant`]). The
//! embedded runtime's pool and every node daemon keep their books with these.
//!
//! Amounts are fixed-point (1/10,000 of a unit) so that fractional requests such as
//! `num_cpus(0.5)` add up exactly.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{check_amount, Config};
use crate::error::{Error, Result};
use crate::task::TaskOptions;

/// One unit of a resource in fixed point.
pub(crate) const UNIT: u64 = 10_000;

pub(crate) fn to_fixed(amount: f64) -> u64 {
    (amount * UNIT as f64).round().max(0.0) as u64
}

pub(crate) fn from_fixed(amount: u64) -> f64 {
    amount as f64 / UNIT as f64
}

/// What one task or actor asks for, in fixed point (memory in bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct Demand {
    pub cpu: u64,
    pub gpu: u64,
    pub memory: u64,
    /// Sorted by name, so that equal demands hash equally.
    pub custom: Vec<(Arc<str>, u64)>,
}

impl Demand {
    /// Lists the demand as `(name, amount)` pairs in natural units.
    pub fn describe(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        if self.cpu > 0 {
            out.push(("CPU".to_string(), from_fixed(self.cpu)));
        }
        if self.gpu > 0 {
            out.push(("GPU".to_string(), from_fixed(self.gpu)));
        }
        if self.memory > 0 {
            out.push(("memory".to_string(), self.memory as f64));
        }
        for (name, v) in &self.custom {
            out.push((name.to_string(), from_fixed(*v)));
        }
        out
    }
}

/// What a job was given: its demand and the ids of the GPUs it may use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grant {
    pub demand: Demand,
    pub gpu_ids: Vec<usize>,
}

impl Demand {
    /// The demand of a call's options, checked: amounts must be finite and not negative.
    pub fn of(options: &TaskOptions) -> Result<Demand> {
        check_amount("num_cpus", options.num_cpus)?;
        check_amount("num_gpus", options.num_gpus)?;
        let mut custom = Vec::with_capacity(options.resources.len());
        for (k, v) in &options.resources {
            check_amount(k, *v)?;
            if *v > 0.0 {
                custom.push((Arc::from(k.as_str()), to_fixed(*v)));
            }
        }
        custom.sort();
        Ok(Demand {
            cpu: to_fixed(options.num_cpus),
            gpu: to_fixed(options.num_gpus),
            memory: options.memory,
            custom,
        })
    }

    /// The demand of amounts in natural units (`CPU`, `GPU`, `memory`, custom names).
    pub fn from_amounts(amounts: &[(String, f64)]) -> Demand {
        let mut d = Demand::default();
        for (name, v) in amounts {
            match name.as_str() {
                "CPU" => d.cpu += to_fixed(*v),
                "GPU" => d.gpu += to_fixed(*v),
                "memory" => d.memory += v.max(0.0) as u64,
                other => d.custom.push((Arc::from(other), to_fixed(*v))),
            }
        }
        d.custom.sort();
        d
    }

    /// Whether it asks for a custom resource named with `prefix` (a placement group's).
    pub fn asks_prefixed(&self, prefix: &str) -> bool {
        self.custom.iter().any(|(n, _)| n.starts_with(prefix))
    }

    /// All of `demands` at once.
    pub fn sum(demands: &[Demand]) -> Demand {
        let mut out = Demand::default();
        let mut custom: HashMap<Arc<str>, u64> = HashMap::new();
        for d in demands {
            out.cpu += d.cpu;
            out.gpu += d.gpu;
            out.memory += d.memory;
            for (k, v) in &d.custom {
                *custom.entry(k.clone()).or_insert(0) += v;
            }
        }
        out.custom = custom.into_iter().collect();
        out.custom.sort();
        out
    }
}

/// Amounts of each resource: what a node has, or has left.
#[derive(Debug, Clone)]
pub(crate) struct Capacity {
    cpu: i64,
    memory: i64,
    /// Remaining share of each GPU, by GPU id.
    gpus: Vec<u64>,
    custom: HashMap<Arc<str>, i64>,
}

/// Amounts per resource name, in natural units.
pub(crate) type Amounts = Vec<(String, f64)>;

impl Capacity {
    /// The total resources a configuration gives.
    pub fn from_config(config: &Config) -> Capacity {
        Capacity {
            cpu: to_fixed(config.num_cpus) as i64,
            memory: config.memory_resource() as i64,
            gpus: vec![UNIT; config.num_gpus as usize],
            custom: config
                .resources
                .iter()
                .map(|(k, v)| (Arc::from(k.as_str()), to_fixed(*v) as i64))
                .collect(),
        }
    }

    /// The amounts per resource name, in natural units.
    pub fn amounts(&self) -> Amounts {
        let mut v = vec![
            ("CPU".to_string(), self.cpu as f64 / UNIT as f64),
            (
                "GPU".to_string(),
                self.gpus.iter().sum::<u64>() as f64 / UNIT as f64,
            ),
            ("memory".to_string(), self.memory as f64),
        ];
        let mut custom: Vec<_> = self
            .custom
            .iter()
            .map(|(k, v)| (k.to_string(), *v as f64 / UNIT as f64))
            .collect();
        custom.sort_by(|a, b| a.0.cmp(&b.0));
        v.extend(custom);
        v
    }

    /// A total rebuilt from amounts in natural units (as nodes report them).
    pub fn from_amounts(amounts: &[(String, f64)]) -> Capacity {
        let mut c = Capacity {
            cpu: 0,
            memory: 0,
            gpus: Vec::new(),
            custom: HashMap::new(),
        };
        for (name, v) in amounts {
            match name.as_str() {
                "CPU" => c.cpu = to_fixed(*v) as i64,
                "GPU" => c.gpus = vec![UNIT; v.floor().max(0.0) as usize],
                "memory" => c.memory = *v as i64,
                other => {
                    c.custom.insert(Arc::from(other), to_fixed(*v) as i64);
                }
            }
        }
        c
    }

    /// Fails with [`Error::Infeasible`] if no amount of waiting could satisfy `d`.
    pub fn check_feasible(&self, d: &Demand) -> Result<()> {
        let t = self;
        let infeasible = |resource: &str, requested: f64, capacity: f64| {
            Err(Error::Infeasible {
                resource: resource.to_string(),
                requested,
                capacity,
            })
        };
        if d.cpu as i64 > t.cpu {
            return infeasible("CPU", from_fixed(d.cpu), from_fixed(t.cpu as u64));
        }
        let gpus = t.gpus.len() as f64;
        if from_fixed(d.gpu) > gpus || (d.gpu > UNIT && d.gpu % UNIT != 0) {
            return infeasible("GPU", from_fixed(d.gpu), gpus);
        }
        if d.memory as i64 > t.memory {
            return infeasible("memory", d.memory as f64, t.memory as f64);
        }
        for (name, v) in &d.custom {
            let have = t.custom.get(name).copied().unwrap_or(0);
            if *v as i64 > have {
                return infeasible(name, from_fixed(*v), from_fixed(have as u64));
            }
        }
        Ok(())
    }

    pub fn fits(&self, d: &Demand) -> bool {
        if d.cpu as i64 > self.cpu || d.memory as i64 > self.memory {
            return false;
        }
        for (name, v) in &d.custom {
            if self.custom.get(name).copied().unwrap_or(0) < *v as i64 {
                return false;
            }
        }
        self.place_gpus(d.gpu).is_some()
    }

    fn place_gpus(&self, gpu: u64) -> Option<Vec<usize>> {
        if gpu == 0 {
            return Some(Vec::new());
        }
        if gpu < UNIT {
            // A fraction shares one device: the fullest that still has room packs best.
            return self
                .gpus
                .iter()
                .enumerate()
                .filter(|(_, &free)| free >= gpu)
                .min_by_key(|(_, &free)| free)
                .map(|(i, _)| vec![i]);
        }
        let whole = (gpu / UNIT) as usize;
        let free: Vec<usize> = self
            .gpus
            .iter()
            .enumerate()
            .filter(|(_, &f)| f == UNIT)
            .map(|(i, _)| i)
            .take(whole)
            .collect();
        (free.len() == whole).then_some(free)
    }

    /// Lends (`lend = true`) or takes back CPUs of a running task that waits.
    pub fn lend_cpu(&mut self, cpu: u64, lend: bool) {
        if lend {
            self.cpu += cpu as i64;
        } else {
            self.cpu -= cpu as i64;
        }
    }

    pub fn take(&mut self, d: &Demand) -> Vec<usize> {
        let ids = self.place_gpus(d.gpu).unwrap_or_default();
        let per_gpu = if d.gpu < UNIT { d.gpu } else { UNIT };
        for &i in &ids {
            self.gpus[i] -= per_gpu;
        }
        self.cpu -= d.cpu as i64;
        self.memory -= d.memory as i64;
        for (name, v) in &d.custom {
            *self.custom.entry(name.clone()).or_insert(0) -= *v as i64;
        }
        ids
    }

    /// Returns what `g` took. A custom resource that has left the books since (a
    /// removed placement group's) is not given back.
    pub fn give(&mut self, g: &Grant) {
        let d = &g.demand;
        let per_gpu = if d.gpu < UNIT { d.gpu } else { UNIT };
        for &i in &g.gpu_ids {
            self.gpus[i] += per_gpu;
        }
        self.cpu += d.cpu as i64;
        self.memory += d.memory as i64;
        for (name, v) in &d.custom {
            if let Some(have) = self.custom.get_mut(name) {
                *have += *v as i64;
            }
        }
    }

    /// Adds amounts of custom resources (in natural units).
    pub fn add(&mut self, amounts: &[(String, f64)]) {
        for (name, v) in amounts {
            *self.custom.entry(Arc::from(name.as_str())).or_insert(0) += to_fixed(*v) as i64;
        }
    }

    /// Drops every custom resource whose name starts with `prefix`.
    pub fn remove_prefixed(&mut self, prefix: &str) {
        self.custom.retain(|name, _| !name.starts_with(prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn capacity(cpu: f64, gpus: usize) -> Capacity {
        Capacity {
            cpu: to_fixed(cpu) as i64,
            memory: 1 << 30,
            gpus: vec![UNIT; gpus],
            custom: HashMap::from([(Arc::from("fpga"), to_fixed(2.0) as i64)]),
        }
    }

    #[test]
    fn fractional_cpus_add_up_exactly() {
        let mut c = capacity(1.0, 0);
        let d = Demand {
            cpu: to_fixed(0.1),
            ..Demand::default()
        };
        let mut grants = Vec::new();
        while c.fits(&d) {
            grants.push(Grant {
                gpu_ids: c.take(&d),
                demand: d.clone(),
            });
        }
        assert_eq!(grants.len(), 10);
        assert_eq!(c.cpu, 0);
    }

    #[test]
    fn whole_gpus_get_distinct_ids_and_fractions_share_one() {
        let mut c = capacity(4.0, 2);
        let two = Demand {
            gpu: 2 * UNIT,
            ..Demand::default()
        };
        let ids = c.take(&two);
        assert_eq!(ids, vec![0, 1]);
        assert!(!c.fits(&Demand {
            gpu: UNIT / 2,
            ..Demand::default()
        }));
        c.give(&Grant {
            demand: two,
            gpu_ids: ids,
        });
        let half = Demand {
            gpu: UNIT / 2,
            ..Demand::default()
        };
        let a = c.take(&half);
        let b = c.take(&half);
        assert_eq!(a, b, "two halves pack onto one device");
        assert_eq!(c.take(&half), vec![1]);
    }

    fn demand_strategy() -> impl Strategy<Value = Demand> {
        (0u64..3, 0u64..4, 0u64..3).prop_map(|(cpu_halves, gpu_quarters, fpga)| Demand {
            cpu: cpu_halves * UNIT / 2,
            gpu: gpu_quarters * UNIT / 4,
            memory: 0,
            custom: if fpga > 0 {
                vec![(Arc::from("fpga"), fpga * UNIT / 2)]
            } else {
                Vec::new()
            },
        })
    }

    proptest! {
        /// Whatever order grants are taken and returned in, the books never go below zero
        /// or above the total, and returning everything restores the total exactly.
        #[test]
        fn grants_balance(ops in proptest::collection::vec((demand_strategy(), any::<bool>()), 1..64)) {
            let total = capacity(2.0, 2);
            let mut c = total.clone();
            let mut held: Vec<Grant> = Vec::new();
            for (d, release) in ops {
                if release && !held.is_empty() {
                    let g = held.remove(0);
                    c.give(&g);
                } else if c.fits(&d) {
                    let ids = c.take(&d);
                    held.push(Grant { demand: d, gpu_ids: ids });
                }
                prop_assert!(c.cpu >= 0 && c.cpu <= total.cpu);
                prop_assert!(c.gpus.iter().all(|&g| g <= UNIT));
                prop_assert!(c.custom.values().all(|&v| v >= 0));
            }
            for g in held.drain(..) {
                c.give(&g);
            }
            prop_assert_eq!(c.cpu, total.cpu);
            prop_assert_eq!(&c.gpus, &total.gpus);
            prop_assert_eq!(&c.custom, &total.custom);
        }
    }
}
