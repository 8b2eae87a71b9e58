//! The head's record of tasks and actors: per job, the latest `task_ring` tasks and
//! `actor_ring` actors, each merged from its events, in the order first seen, and the
//! count of those let go (or dropped before they reached the head).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use std::hash::BuildHasherDefault;

use crate::id::ObjectId;
use crate::state::{
    ActorPage, ActorQuery, ActorRecord, ActorState, EventBatch, IdHasher, TaskPage, TaskQuery,
    TaskRecord, TaskState, TaskSummary,
};

type IdMap<V> = HashMap<ObjectId, V, BuildHasherDefault<IdHasher>>;
type IdSet = HashSet<ObjectId, BuildHasherDefault<IdHasher>>;

/// Records in the order first seen, at most `cap` of them, and the ids of the latest
/// let go (so that a late event of one does not bring it back and count it twice).
struct Ring<R> {
    records: IdMap<R>,
    order: VecDeque<ObjectId>,
    dropped: u64,
    gone: IdSet,
    gone_order: VecDeque<ObjectId>,
}

impl<R> Default for Ring<R> {
    fn default() -> Self {
        Ring {
            records: IdMap::default(),
            order: VecDeque::new(),
            dropped: 0,
            gone: IdSet::default(),
            gone_order: VecDeque::new(),
        }
    }
}

/// Ids of records let go that a ring remembers at least.
const GONE_KEPT: usize = 10_000;

impl<R> Ring<R> {
    /// The record of `id`, made by `new` (and the oldest let go, past `cap`) if it is
    /// not kept; `None` if it was let go.
    fn entry(&mut self, id: ObjectId, cap: usize, new: impl FnOnce() -> R) -> Option<&mut R> {
        if !self.records.contains_key(&id) {
            if !self.gone.is_empty() && self.gone.contains(&id) {
                return None;
            }
            while self.order.len() >= cap.max(1) {
                if let Some(old) = self.order.pop_front() {
                    self.records.remove(&old);
                    self.dropped += 1;
                    self.forget(old, cap.max(GONE_KEPT));
                }
            }
            self.order.push_back(id);
            self.records.insert(id, new());
        }
        self.records.get_mut(&id)
    }

    /// Remembers that `id` was let go, among the latest `keep` such.
    fn forget(&mut self, id: ObjectId, keep: usize) {
        if self.gone_order.len() >= keep {
            if let Some(oldest) = self.gone_order.pop_front() {
                self.gone.remove(&oldest);
            }
        }
        self.gone.insert(id);
        self.gone_order.push_back(id);
    }

    fn iter(&self) -> impl Iterator<Item = &R> {
        self.order.iter().filter_map(|id| self.records.get(id))
    }
}

/// One job's records.
#[derive(Default)]
struct JobEvents {
    tasks: Ring<TaskRecord>,
    actors: Ring<ActorRecord>,
}

/// Every job's records.
pub(super) struct Events {
    task_ring: usize,
    actor_ring: usize,
    jobs: BTreeMap<u32, JobEvents>,
}

impl Events {
    /// Rings of `task_ring` tasks and `actor_ring` actors per job.
    pub fn new(task_ring: usize, actor_ring: usize) -> Events {
        Events {
            task_ring,
            actor_ring,
            jobs: BTreeMap::new(),
        }
    }

    /// Merges a node's batch.
    pub fn absorb(&mut self, batch: EventBatch) {
        // A batch's events are mostly of one job: its ring is looked up once per run.
        let mut current: Option<(u32, &mut JobEvents)> = None;
        for ev in batch.tasks {
            let job = match current.take() {
                Some((j, events)) if j == ev.job => events,
                _ => self.jobs.entry(ev.job).or_default(),
            };
            let record = job.tasks.entry(ev.task_id, self.task_ring, || {
                TaskRecord::new(ev.task_id, ev.job)
            });
            if let Some(r) = record {
                r.apply(ev.at_us, ev.kind);
            }
            current = Some((ev.job, job));
        }
        for ev in batch.actors {
            let job = self.jobs.entry(ev.job).or_default();
            let record = job.actors.entry(ev.actor_id, self.actor_ring, || {
                ActorRecord::new(ev.actor_id, ev.job)
            });
            if let Some(r) = record {
                r.apply(ev.at_us, ev.kind);
            }
        }
        for (job, n) in batch.dropped {
            self.jobs.entry(job).or_default().tasks.dropped += n;
        }
    }

    fn jobs(&self, job: Option<u32>) -> impl Iterator<Item = &JobEvents> {
        self.jobs
            .iter()
            .filter(move |(j, _)| job.is_none_or(|want| want == **j))
            .map(|(_, e)| e)
    }

    /// The tasks `q` asks for.
    pub fn tasks(&self, q: &TaskQuery) -> TaskPage {
        let mut page = TaskPage::default();
        for job in self.jobs(q.job) {
            page.dropped += job.tasks.dropped;
            for t in job.tasks.iter().filter(|t| q.matches(t)) {
                if page.total >= q.offset && (page.tasks.len() as u64) < q.limit {
                    page.tasks.push(t.clone());
                }
                page.total += 1;
            }
        }
        page
    }

    /// The actors `q` asks for.
    pub fn actors(&self, q: &ActorQuery) -> ActorPage {
        let mut page = ActorPage::default();
        for job in self.jobs(q.job) {
            page.dropped += job.actors.dropped;
            for a in job.actors.iter() {
                if q.state.is_some_and(|s| s != a.state) {
                    continue;
                }
                if (page.actors.len() as u64) < q.limit {
                    page.actors.push(a.clone());
                }
                page.total += 1;
            }
        }
        page
    }

    /// Task counts by function and state, for `job` or every job.
    pub fn summary(&self, job: Option<u32>) -> TaskSummary {
        let mut by: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
        let mut dropped = 0;
        for j in self.jobs(job) {
            dropped += j.tasks.dropped;
            for t in j.tasks.records.values() {
                by.entry(&t.function).or_default()[t.state as usize] += 1;
            }
        }
        TaskSummary {
            functions: by.into_iter().map(|(f, c)| (f.to_string(), c)).collect(),
            dropped,
        }
    }

    /// A job's task counts per state, its actors alive and its dropped task records.
    pub fn job_counts(&self, job: u32) -> ([u64; 4], u64, u64) {
        let Some(j) = self.jobs.get(&job) else {
            return ([0; 4], 0, 0);
        };
        let mut counts = [0u64; 4];
        for t in j.tasks.records.values() {
            counts[t.state as usize] += 1;
        }
        let alive = j
            .actors
            .records
            .values()
            .filter(|a| a.state == ActorState::Alive)
            .count() as u64;
        (counts, alive, j.tasks.dropped)
    }
}

/// [`TaskState`]'s index in [`TaskState::ALL`] is its discriminant.
const _: () = assert!(TaskState::Failed as usize == 3);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ActorEvent, ActorEventKind, TaskEvent, TaskEventKind};

    fn submitted(job: u32, n: u64, function: &str) -> TaskEvent {
        TaskEvent {
            task_id: ObjectId::new(job, n),
            job,
            at_us: n,
            kind: TaskEventKind::Submitted {
                function: function.into(),
            },
        }
    }

    fn query(job: Option<u32>, state: Option<TaskState>, offset: u64, limit: u64) -> TaskQuery {
        TaskQuery {
            job,
            state,
            function: None,
            offset,
            limit,
        }
    }

    #[test]
    fn rings_keep_the_latest_and_count_the_rest() {
        let mut e = Events::new(100, 2);
        e.absorb(EventBatch {
            tasks: (0..250).map(|n| submitted(1, n, "m::f")).collect(),
            actors: (0..3)
                .map(|n| ActorEvent {
                    actor_id: ObjectId::new(1, 1000 + n),
                    job: 1,
                    at_us: n,
                    kind: ActorEventKind::Alive { pid: 1 },
                })
                .collect(),
            dropped: vec![(1, 7)],
        });
        let page = e.tasks(&query(Some(1), None, 0, 1000));
        assert_eq!(page.total, 100);
        assert_eq!(page.dropped, 150 + 7);
        assert_eq!(
            page.tasks[0].task_id,
            ObjectId::new(1, 150),
            "the oldest went"
        );
        // Late events of the tasks let go neither bring them back nor count twice.
        e.absorb(EventBatch {
            tasks: (0..150).map(|n| submitted(1, n, "m::f")).collect(),
            ..EventBatch::default()
        });
        let page = e.tasks(&query(Some(1), None, 0, 1000));
        assert_eq!((page.total, page.dropped), (100, 157));
        let actors = e.actors(&ActorQuery {
            job: None,
            state: Some(ActorState::Alive),
            limit: 10,
        });
        assert_eq!((actors.total, actors.dropped), (2, 1));
    }

    #[test]
    fn pages_filter_and_count_what_matches() {
        let mut e = Events::new(1000, 10);
        let mut tasks: Vec<TaskEvent> = (0..10).map(|n| submitted(1, n, "m::f")).collect();
        tasks.extend((0..5).map(|n| submitted(2, n, "m::g")));
        tasks.push(TaskEvent {
            task_id: ObjectId::new(2, 0),
            job: 2,
            at_us: 99,
            kind: TaskEventKind::Finished,
        });
        e.absorb(EventBatch {
            tasks,
            ..EventBatch::default()
        });
        let page = e.tasks(&query(None, None, 3, 4));
        assert_eq!((page.total, page.tasks.len()), (15, 4));
        assert_eq!(page.tasks[0].task_id, ObjectId::new(1, 3));
        let done = e.tasks(&query(Some(2), Some(TaskState::Finished), 0, 10));
        assert_eq!(done.total, 1);
        let summary = e.summary(None);
        assert_eq!(
            summary.functions,
            vec![
                ("m::f".into(), [10, 0, 0, 0]),
                ("m::g".into(), [4, 0, 1, 0])
            ]
        );
        assert_eq!(e.job_counts(2).0, [4, 0, 1, 0]);
    }
}
